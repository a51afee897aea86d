"""`seqpan train`: train SeqPAN on a dataset in the original layout."""
from __future__ import annotations

import argparse

from reference.config import PRESETS, preset

from ..data.dataset import build_dataset, read_annotations
from ..devices import resolve_device
from ..io.checkpoint import load_checkpoint
from ..train.trainer import Schedule, Trainer
from . import print_json
from .options import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SeqPAN on a dataset in the original layout")
    add_data_args(p)
    p.add_argument("--train", required=True, help="training annotation file")
    p.add_argument("--val", required=True, help="validation annotation file (evaluated twice per epoch)")
    p.add_argument("--glove", help="GloVe-format word vectors (default: random vectors, every word kept)")
    p.add_argument("--out", default="runs/train", help="checkpoint directory (best/last .safetensors)")
    p.add_argument("--resume", help="a `last.safetensors` to continue exactly (its schedule is kept)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--patience", type=int, default=10, help="epochs without a better val R@1 IoU=0.7")
    p.add_argument("--padding", default="batch", choices=["batch", "isolated"],
                   help="training padding mode (batch: the original's)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--max-pos-len", type=int, help="clips per video (default: the format's preset)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all")
    p.add_argument("--seconds", type=float, help="stop training after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    train = read_annotations(args.train, args.format, args.durations)
    val = read_annotations(args.val, args.format, args.durations)
    if args.resume:
        max_pos_len = load_checkpoint(args.resume).model.cfg.max_pos_len
    else:
        max_pos_len = args.max_pos_len or PRESETS[args.format]["max_pos_len"]
    data = build_dataset(args.features, train, val, max_pos_len, glove=args.glove, seed=args.seed)
    print(f"{len(data.train)} training and {len(data.val)} validation queries, {len(data.word_dict)} words, "
          f"{len(data.char_dict)} chars; {data.skipped} queries skipped (no feature file)")
    if args.resume:
        trainer = Trainer.resume(args.resume, data, args.out, device)
    else:
        cfg = preset(args.format, len(data.word_dict), len(data.char_dict), max_pos_len=max_pos_len,
                     dim=args.dim, num_heads=args.num_heads)
        schedule = Schedule(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                            padding=args.padding, seed=args.seed)
        trainer = Trainer.fresh(cfg, data, schedule, args.out, device)
    result = trainer.run(max_steps=args.max_steps, seconds=args.seconds)
    print(f"stopped ({result.stopped}) after {result.steps} steps; best {result.best_path}, last {result.last_path}")
    if args.json:
        print_json({**result.best_metrics, "steps": result.steps, "stopped": result.stopped,
                    "best": str(result.best_path), "last": str(result.last_path)})
    return 0
