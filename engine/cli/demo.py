"""`seqpan demo`: train and evaluate a small model on real queries with synthetic features."""
from __future__ import annotations

import argparse

import torch

from ..devices import resolve_device
from ..errors import UsageError
from ..train.demo import run_demo
from . import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train and evaluate a small model on real queries with synthetic features")
    p.add_argument("--out", default="runs/demo", help="where the dataset and checkpoints go")
    p.add_argument("--seconds", type=float, default=270.0,
                   help="time budget for building the data and training (grounding the held-out set follows)")
    p.add_argument("--epochs", type=int, help="train this many epochs with no time budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (the demo's target), cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: the small model gains little from more, and on a busy CPU "
                        "more threads crawl)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        summary = run_demo(args.out, None if args.epochs else args.seconds, args.epochs, args.seed,
                           resolve_device(args.device))
    finally:
        torch.set_num_threads(threads)
    print(f"held-out R@1 IoU=0.5 {summary['r1_iou05']:.4f} vs position-only {summary['baseline_r1_iou05']:.4f}; "
          f"{summary['seconds']:.0f} s in all")
    if args.json:
        print_json(summary)
    return 0
