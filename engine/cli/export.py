"""`seqpan export-onnx` and `seqpan build-trt`: the localizer as an ONNX file and as a cached TensorRT engine."""
from __future__ import annotations

import argparse

import torch

from reference.precision import EXPORT_PRECISIONS, PRECISIONS, precision_name

from ..compile.onnx_export import META_DTYPE, export_localizer, onnx_metadata, read_localizer_onnx
from ..compile.trt import DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH, engine_for
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint, weights_hash
from .options import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export the localizer (predictor + span decoding) to ONNX")
    p.add_argument("checkpoint", help="native .safetensors checkpoint")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--precision", default="fp32", choices=EXPORT_PRECISIONS)
    p.set_defaults(func=run_export)

    p = sub.add_parser("build-trt", help="build (or find in the cache) the localizer's TensorRT engine")
    p.add_argument("checkpoint", help="native .safetensors checkpoint")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS,
                   help="engine precision (default: the --onnx file's, else fp32)")
    p.add_argument("--onnx", help="build from this export (refused unless it came from the checkpoint)")
    p.add_argument("--cache-dir", help="engine cache (default: ~/.cache/seqpan/trt)")
    p.add_argument("--max-batch", type=positive_int, default=DEFAULT_MAX_BATCH)
    p.add_argument("--opt-batch", type=positive_int, default=DEFAULT_OPT_BATCH)
    p.set_defaults(func=run_build)


def run_export(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.checkpoint).model
    path = export_localizer(model, args.out, PRECISIONS[args.precision].dtype)
    print(f"wrote {path} ({args.precision}, weights {weights_hash(model)[:12]})")
    return 0


def run_build(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.checkpoint).model
    proto, precision = None, args.precision or "fp32"
    if args.onnx:
        proto = read_localizer_onnx(args.onnx, model)
        file_precision = precision_name(getattr(torch, onnx_metadata(proto)[META_DTYPE], None))
        if file_precision is None or args.precision not in (None, file_precision):
            raise UsageError(f"{args.onnx} is a {onnx_metadata(proto)[META_DTYPE]} export; TensorRT needs "
                            f"{args.precision or 'fp32, fp16 or bf16'}")
        precision = file_precision
    engine = engine_for(model, precision, args.cache_dir, args.max_batch, args.opt_batch, proto)
    print(f"{engine.path} ({precision}, {engine.status}); profiles: {'; '.join(map(str, engine.profiles))}")
    return 0
