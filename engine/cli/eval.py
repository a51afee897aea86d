"""`seqpan eval`: R@1 at IoU 0.3/0.5/0.7 and mIoU of a checkpoint on a dataset split."""
from __future__ import annotations

import argparse

from ..data.dataset import read_annotations
from ..devices import resolve_device
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint
from ..train.evaluate import evaluate_records
from . import print_json
from .options import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="R@1 at IoU 0.3/0.5/0.7 and mIoU of a checkpoint on a dataset split")
    add_data_args(p)
    p.add_argument("--checkpoint", required=True, help="native .safetensors checkpoint")
    p.add_argument("--annotations", required=True, help="annotation file of the split to evaluate")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    records = read_annotations(args.annotations, args.format, args.durations)
    ckpt = load_checkpoint(args.checkpoint, device)
    evaluation, samples, skipped = evaluate_records(ckpt.model, ckpt.word_dict, ckpt.char_dict, records,
                                                    args.features, device, args.batch_size)
    print(f"{len(samples)} queries ({skipped} skipped, no feature file): "
          + "  ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items()))
    if args.json:
        print_json({**evaluation.metrics, "queries": len(samples), "skipped": skipped})
    return 0
