"""`seqpan bench`: latency and throughput of the reference (eager, torch.compile) and the engine's
backends on real-query workloads, in one process, on the same inputs (see bench/runner.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import rows_table, where_measured
from bench.runner import BACKEND_NAMES, PRECISIONS, SECTIONS, Bench, BenchOptions, default_backends, write_reports
from bench.workloads import WORKLOADS

from .cli import UserError
from .engine import resolve_device

QUICK = {"batch_sizes": "1,4", "repeats": 3, "warmup": 1, "precisions": "fp32", "concurrency": "1,2",
         "requests_per_submitter": 2, "shared_batch": 8}
DEFAULTS = {"batch_sizes": "1,8,64,256,1024", "repeats": 50, "warmup": 10, "precisions": "fp32,bf16",
            "concurrency": "1,8,32", "requests_per_submitter": 16, "shared_batch": 64}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine against the reference (eager and torch.compile)",
                       description=__doc__)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default %(default)s)")
    p.add_argument("--backends", help=f"comma-separated among {', '.join(BACKEND_NAMES)} (default: those that run "
                                      "on the device; no reference-compile on CPU)")
    p.add_argument("--precisions", help=f"{' and/or '.join(PRECISIONS)} (default {DEFAULTS['precisions']})")
    p.add_argument("--batch-sizes", help=f"comma-separated (default {DEFAULTS['batch_sizes']})")
    p.add_argument("--repeats", type=int, help=f"timed calls per row (default {DEFAULTS['repeats']})")
    p.add_argument("--warmup", type=int, help=f"untimed calls first (default {DEFAULTS['warmup']})")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated (default %(default)s)")
    p.add_argument("--concurrency", help=f"micro-batcher submitter counts (default {DEFAULTS['concurrency']})")
    p.add_argument("--time-budget", type=float, help="seconds; once spent, remaining groups are skipped (noted)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="small smoke run: batch sizes 1,4, 3 repeats, fp32 (explicit options still win)")
    p.add_argument("--out", default="runs/bench",
                   help="folder for results.json, results.md, latency.png (default %(default)s)")
    p.set_defaults(func=run)


def _list(text: str, what: str, choices=None, convert=str) -> list:
    try:
        items = [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"--{what}: expected a comma-separated list of integers, got {text!r}") from None
    bad = [item for item in items if (choices is not None and item not in choices) or (convert is int and item < 1)]
    if not items or bad:
        allowed = f"; choose from {', '.join(map(str, choices))}" if choices is not None else " (positive)"
        raise UserError(f"--{what}: bad value(s) {', '.join(map(str, bad)) or 'none given'}{allowed}")
    return items


def options(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from the command line; raises UserError on a bad value."""
    preset = QUICK if args.quick else DEFAULTS
    pick = {name: preset[name] if getattr(args, name, None) is None else getattr(args, name) for name in preset}
    if pick["repeats"] < 1 or pick["warmup"] < 0:
        raise UserError("--repeats must be at least 1 and --warmup at least 0")
    device = resolve_device(args.device)
    return BenchOptions(
        workloads=_list(args.workloads, "workloads", tuple(WORKLOADS)),
        backends=_list(args.backends, "backends", BACKEND_NAMES) if args.backends else default_backends(device),
        precisions=_list(pick["precisions"], "precisions", PRECISIONS),
        batch_sizes=_list(pick["batch_sizes"], "batch-sizes", convert=int),
        device=device, repeats=pick["repeats"], warmup=pick["warmup"],
        sections=_list(args.sections, "sections", SECTIONS),
        concurrency=_list(pick["concurrency"], "concurrency", convert=int),
        requests_per_submitter=pick["requests_per_submitter"], shared_batch=pick["shared_batch"],
        time_budget_s=args.time_budget, out=Path(args.out))


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    results = Bench(opts).run()
    written = write_reports(results, opts.out)
    print(where_measured(results["env"]))
    print(rows_table(results["rows"]))
    print("wrote " + ", ".join(map(str, written)))
    return 0
