"""`seqpan bench` options -> BenchOptions, and the run that writes the reports (the `seqpan bench`
command loads this module when it runs)."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.devices import resolve_device
from engine.errors import UsageError
from reference.precision import ENGINE_PRECISIONS

from .report import rows_table, where_measured
from .backends import BACKEND_NAMES, SECTIONS, Bench, BenchOptions, default_backends, write_reports
from .workloads import WORKLOADS

QUICK = {"batch_sizes": "1,4", "repeats": 3, "warmup": 1, "min_seconds": 0.0, "precisions": "fp32",
         "concurrency": "1,2", "requests_per_submitter": 2, "shared_batch": 8}
CPU_BATCH_SIZES = "1,16,64"  # the default on CPU, where 1024 queries per call take seconds
DEFAULTS = {"batch_sizes": "1,8,64,256,1024", "repeats": 50, "warmup": 10, "min_seconds": 3.0,
            "precisions": "fp32,bf16", "concurrency": "1,8,32", "requests_per_submitter": 16, "shared_batch": 64}


def _list(text: str, what: str, choices=None, convert=str) -> list:
    try:
        items = [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"--{what}: expected a comma-separated list of integers, got {text!r}") from None
    bad = [item for item in items if (choices is not None and item not in choices) or (convert is int and item < 1)]
    if not items or bad:
        allowed = f"; choose from {', '.join(map(str, choices))}" if choices is not None else " (positive)"
        raise UsageError(f"--{what}: bad value(s) {', '.join(map(str, bad)) or 'none given'}{allowed}")
    return items


def options(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from the command line; raises UsageError on a bad value."""
    preset = QUICK if args.quick else DEFAULTS
    pick = {name: preset[name] if getattr(args, name, None) is None else getattr(args, name) for name in preset}
    if pick["repeats"] < 1 or pick["warmup"] < 0 or pick["min_seconds"] < 0:
        raise UsageError("--repeats must be at least 1, --warmup and --min-seconds at least 0")
    device = resolve_device(args.device)
    if device.type == "cpu" and not args.quick and args.batch_sizes is None:
        pick["batch_sizes"] = CPU_BATCH_SIZES
    return BenchOptions(
        workloads=_list(args.workloads or ",".join(WORKLOADS), "workloads", tuple(WORKLOADS)),
        backends=_list(args.backends, "backends", BACKEND_NAMES) if args.backends else default_backends(device),
        precisions=_list(pick["precisions"], "precisions", ENGINE_PRECISIONS),
        batch_sizes=_list(pick["batch_sizes"], "batch-sizes", convert=int),
        device=device, repeats=pick["repeats"], warmup=pick["warmup"], min_seconds=pick["min_seconds"],
        sections=_list(args.sections, "sections", SECTIONS),
        concurrency=_list(pick["concurrency"], "concurrency", convert=int),
        requests_per_submitter=pick["requests_per_submitter"], shared_batch=pick["shared_batch"],
        time_budget_s=args.time_budget, out=Path(args.out))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe, print its table, write results.json/.md/.png."""
    opts = options(args)
    results = Bench(opts).run()
    written = write_reports(results, opts.out)
    print(where_measured(results["env"]))
    print(rows_table(results["rows"]))
    print("wrote " + ", ".join(map(str, written)))
    return 0
