"""`seqpan train`, `seqpan eval` and `seqpan demo`."""
from __future__ import annotations

import argparse

import torch

from reference.config import PRESETS, preset

from .checkpoint import load_checkpoint
from .cli import UserError, print_json
from .dataset import FORMATS, build_dataset, read_annotations
from .engine import resolve_device


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=FORMATS, help="annotation format (also picks the preset)")
    p.add_argument("--features", required=True, help="directory of per-video <vid>.npy clip features")
    p.add_argument("--durations", help="JSON {vid: seconds} (charades format only)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


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
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="R@1 at IoU 0.3/0.5/0.7 and mIoU of a checkpoint on a dataset split")
    add_data_args(p)
    p.add_argument("--checkpoint", required=True, help="native .safetensors checkpoint")
    p.add_argument("--annotations", required=True, help="annotation file of the split to evaluate")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run_eval)

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
    p.set_defaults(func=run_demo)


def run_train(args: argparse.Namespace) -> int:
    from .train import Schedule, Trainer

    device = resolve_device(args.device)
    if args.format == "charades" and args.durations is None:
        raise UserError("--format charades needs --durations JSON")
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


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_records

    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.format == "charades" and args.durations is None:
        raise UserError("--format charades needs --durations JSON")
    records = read_annotations(args.annotations, args.format, args.durations)
    ckpt = load_checkpoint(args.checkpoint, device)
    evaluation, samples, skipped = evaluate_records(ckpt.model, ckpt.word_dict, ckpt.char_dict, records,
                                                    args.features, device, args.batch_size)
    print(f"{len(samples)} queries ({skipped} skipped, no feature file): "
          + "  ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items()))
    if args.json:
        print_json({**evaluation.metrics, "queries": len(samples), "skipped": skipped})
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as demo

    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        summary = demo(args.out, None if args.epochs else args.seconds, args.epochs, args.seed,
                       resolve_device(args.device))
    finally:
        torch.set_num_threads(threads)
    print(f"held-out R@1 IoU=0.5 {summary['r1_iou05']:.4f} vs position-only {summary['baseline_r1_iou05']:.4f}; "
          f"{summary['seconds']:.0f} s in all")
    if args.json:
        print_json(summary)
    return 0
