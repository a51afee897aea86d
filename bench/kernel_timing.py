"""Time each fused block against its reference twin, eager and `torch.compile`d, in one process.

    python -m bench.kernel_timing --batch 1024 --video-len 64 --query-len 12 --dtypes bf16 fp32 \
        --out $OUT/kernel_timing.json

Needs a CUDA GPU (times are CUDA-event means after warm-up). For every block and dtype it
reports the time per call, the achieved bandwidth (the bytes the block must read and write once:
inputs, weights, outputs) and FLOP rate (the algorithm's multiply-adds × 2), and the fused
output's relative error against a float64 reference. The timed units are what the model runs:
`conv_block` one conv block over the video, `sgpa` one SGPA layer in both directions, `cqa` both
CQA blocks (q2v and v2q), `pool_concat` the weighted-pool concat, `span` span decoding.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from reference.precision import PRECISIONS

from .timing import time_calls

BLOCKS = ("conv_block", "sgpa", "cqa", "pool_concat", "span")


@dataclass(frozen=True)
class Shape:
    batch: int = 1024
    video_len: int = 64  # N clips
    query_len: int = 12  # M words
    dim: int = 128
    num_heads: int = 8
    conv_kernel: int = 7
    conv_layers: int = 4


def block_cost(block: str, s: Shape, elem_bytes: int) -> dict[str, int]:
    """Bytes that must move (each input, weight and output once) and FLOPs of one timed call.

    Activations and matrices take `elem_bytes`; masks 1 byte; layer-norm and bias vectors stay
    fp32 (4 bytes); indices 8 bytes.
    """
    b, n, m, d, e = s.batch, s.video_len, s.query_len, s.dim, elem_bytes
    if block == "conv_block":
        weights = s.conv_layers * (d * d * e + (s.conv_kernel + 3) * d * 4)
        return dict(bytes=2 * b * n * d * e + b * n + weights,
                    flops=s.conv_layers * b * n * (2 * s.conv_kernel * d + 2 * d * d))
    if block == "sgpa":
        def direction(lx: int, ly: int) -> int:  # 14 dense layers on x rows, 2 on y rows, 2 attentions
            return 2 * d * d * (14 * lx + 2 * ly) + 4 * d * lx * (lx + ly)
        return dict(bytes=2 * b * (n + m) * d * e + b * (n + m) + 16 * d * d * e + 20 * d * 4,
                    flops=b * (direction(n, m) + direction(m, n)))
    if block == "cqa":
        def one(lc: int, lq: int) -> int:  # similarity, c2q, T = S_cᵀC, q2c, the 4d -> d dense
            return 8 * lc * lq * d + 2 * (lc + lq) * d + 8 * lc * d * d
        moved = 2 * (b * (n + m) * d * e + b * (n + m) + 4 * d * d * e + 3 * d * 4)  # inputs, masks, weights
        moved += b * (n + m) * d * e + 2 * b * n * m * e  # outputs and both similarity matrices
        return dict(bytes=moved, flops=b * (one(n, m) + one(m, n)))
    if block == "pool_concat":
        return dict(bytes=b * (2 * n + m) * d * e + b * m + 2 * d * d * e + 2 * d * 4,
                    flops=b * (2 * n * d * d + 2 * d * d + 4 * m * d))
    if block == "span":  # two softmaxes, two running maxima, two products: 10 operations a position
        return dict(bytes=2 * b * n * e + b * n + b * (16 + e), flops=10 * b * n)
    raise ValueError(f"unknown block {block!r}; choose from {', '.join(BLOCKS)}")


@dataclass
class Case:
    """One block at one shape and dtype: the reference callable, the fused one, their inputs."""
    reference: Callable
    fused: Callable
    args: tuple
    reference64: Callable  # the reference in float64, on float64 copies of args


def build_case(block: str, s: Shape, dtype: torch.dtype, device: str, seed: int = 0, **fused_options) -> Case:
    """Trained-like random weights and full-length inputs (every sample N clips, M words)."""
    from kernels.conv_block import FusedConvBlock
    from kernels.cqa import FusedCQA, FusedPoolConcat
    from kernels.sgpa import FusedSGPALayer
    from kernels.span import decode_span
    from reference.config import SeqPANConfig
    from reference.conv_block import ConvBlock
    from reference.cqa import ContextQueryAttention, PoolConcat
    from reference.localizer import decode_span as reference_decode_span
    from reference.sgpa import SGPALayer
    from reference.testing import init_like_trained

    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=s.dim, num_heads=s.num_heads, conv_kernel=s.conv_kernel,
                       conv_layers=s.conv_layers, max_pos_len=max(s.video_len, s.query_len))
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(s.batch, s.video_len, s.dim, generator=gen).to(device, dtype)
    q = torch.randn(s.batch, s.query_len, s.dim, generator=gen).to(device, dtype)
    v_mask = torch.ones(s.batch, s.video_len, dtype=torch.bool, device=device)
    q_mask = torch.ones(s.batch, s.query_len, dtype=torch.bool, device=device)

    def modules(cls, fused_cls):
        ref = init_like_trained(cls(cfg), seed).to(device)
        ref64 = copy.deepcopy(ref).double()
        ref.to(dtype)
        return ref, fused_cls(ref, **fused_options), ref64

    if block == "conv_block":
        ref, fused, ref64 = modules(ConvBlock, FusedConvBlock)
        return Case(ref, fused, (v, v_mask), ref64)
    if block == "sgpa":
        ref, fused, ref64 = modules(SGPALayer, FusedSGPALayer)

        def both(layer):
            return lambda v, q, vm, qm: (layer(v, q, vm, qm), layer(q, v, qm, vm))
        return Case(both(ref), both(fused), (v, q, v_mask, q_mask), both(ref64))
    if block == "cqa":
        ref, fused, ref64 = modules(ContextQueryAttention, FusedCQA)

        def both(cqa):
            return lambda v, q, vm, qm: (*cqa(v, q, vm, qm), *cqa(q, v, qm, vm))
        return Case(both(ref), both(fused), (v, q, v_mask, q_mask), both(ref64))
    if block == "pool_concat":
        ref, fused, ref64 = modules(PoolConcat, FusedPoolConcat)
        return Case(ref, fused, (v, q, q_mask), ref64)
    if block == "span":
        logits = (3 * torch.randn(2, s.batch, s.video_len, generator=gen)).to(device, dtype)
        return Case(reference_decode_span, decode_span, (logits[0], logits[1], v_mask),
                    lambda a, b, m: reference_decode_span(a, b, m)[:2])
    raise ValueError(f"unknown block {block!r}; choose from {', '.join(BLOCKS)}")


def fused_error(case: Case) -> float:
    """Largest relative error of the fused outputs against the float64 reference (indices: 0 or 1)."""
    from reference.ops import relative_error

    with torch.no_grad():
        got = case.fused(*case.args)
        want = case.reference64(*(a.double() if a.is_floating_point() else a for a in case.args))
    got, want = (got,) if torch.is_tensor(got) else got, (want,) if torch.is_tensor(want) else want
    errors = [float(not torch.equal(g, w)) if not w.is_floating_point() else relative_error(g, w)
              for g, w in zip(got, want)]
    return max(errors)


def block_options(block: str, cap: int) -> dict:
    """Fused-module options capping every block (rows, keys / words, conv tile rows) at `cap`."""
    if block == "conv_block":
        return dict(tile_rows=cap)
    if block == "sgpa":
        return dict(block_rows=cap, block_keys=cap)
    return dict(block_rows=cap, block_words=cap) if block in ("cqa", "pool_concat") else {}


def run(shape: Shape = Shape(), dtypes: tuple[str, ...] = ("bf16", "fp32"), blocks: tuple[str, ...] = BLOCKS,
        compile_reference: bool = True, warmup: int = 20, iters: int = 100, device: str = "cuda",
        block_caps: tuple[int, ...] = ()) -> dict:
    """Time every block × dtype × {reference eager, reference compiled, fused}; return a JSON-able dict.

    block_caps: also time the fused blocks with every block capped at each of these sizes (as
    kernels.settings clamps them), under `fused_capped` (e.g. smaller blocks that spill less).
    """
    import triton

    rows = []
    for dtype_name in dtypes:
        dtype = PRECISIONS[dtype_name].dtype
        for block in blocks:
            case = build_case(block, shape, dtype, device)
            cost = block_cost(block, shape, torch.finfo(dtype).bits // 8)
            impls = {"reference": case.reference, "fused": case.fused}
            if compile_reference:
                impls["reference_compiled"] = torch.compile(case.reference)
            row = dict(block=block, dtype=dtype_name, **cost, fused_rel_error=fused_error(case))

            def timed(fn, args=case.args) -> dict:
                ms = time_calls(lambda: fn(*args), torch.device(device), warmup, 1, iters)[0]
                return dict(ms=ms, gb_per_s=cost["bytes"] / ms / 1e6, tflop_per_s=cost["flops"] / ms / 1e9)

            with torch.no_grad():
                for name, fn in impls.items():
                    row[name] = timed(fn)
                for cap in block_caps if block_options(block, 16) else ():
                    capped = build_case(block, shape, dtype, device, **block_options(block, cap))
                    row.setdefault("fused_capped", {})[str(cap)] = dict(**timed(capped.fused),
                                                                        rel_error=fused_error(capped))
            for name in impls.keys() - {"fused"}:
                row[f"speedup_vs_{name}"] = row[name]["ms"] / row["fused"]["ms"]
            rows.append(row)
    return dict(shape=asdict(shape), device=torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
                torch=torch.__version__, triton=triton.__version__, date=datetime.date.today().isoformat(),
                warmup=warmup, iters=iters, results=rows)


def format_table(report: dict) -> str:
    lines = [f"{'block':<12} {'dtype':<5} {'impl':<19} {'ms':>9} {'GB/s':>8} {'TFLOP/s':>8}"]
    for row in report["results"]:
        impls = [(impl, row[impl]) for impl in ("reference", "reference_compiled", "fused") if impl in row]
        impls += [(f"fused blocks<={cap}", r) for cap, r in row.get("fused_capped", {}).items()]
        for impl, r in impls:
            lines.append(f"{row['block']:<12} {row['dtype']:<5} {impl:<19} {r['ms']:>9.4f} {r['gb_per_s']:>8.1f} "
                         f"{r['tflop_per_s']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=Shape.batch)
    parser.add_argument("--video-len", type=int, default=Shape.video_len)
    parser.add_argument("--query-len", type=int, default=Shape.query_len)
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16", "fp16"), default=["bf16", "fp32"])
    parser.add_argument("--blocks", nargs="+", choices=BLOCKS, default=list(BLOCKS))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    parser.add_argument("--block-caps", nargs="+", type=int, default=[],
                        help="also time the fused blocks with every block capped at each of these sizes")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("kernel_timing.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.exit(2, "kernel_timing needs a CUDA GPU (none is visible)\n")
    report = run(Shape(args.batch, args.video_len, args.query_len), tuple(args.dtypes), tuple(args.blocks),
                 not args.no_compile, args.warmup, args.iters, block_caps=tuple(args.block_caps))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
