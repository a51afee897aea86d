"""`seqpan bench`: latency and throughput of the reference (eager, torch.compile) and the engine's
backends on real-query workloads, in one process, on the same inputs. The harness lives in the
top-level `bench` package, loaded only when this command runs."""
from __future__ import annotations

import argparse
import importlib


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine against the reference (eager and torch.compile) and, on "
                       "CPU, the ONNX export on onnxruntime and OpenVINO",
                       description=__doc__)
    p.add_argument("--workloads", help="comma-separated among charades, activitynet, tacos (default: all)")
    p.add_argument("--backends", help="comma-separated among reference-eager, reference-compile, onnxruntime-dynamic, "
                                      "openvino-dynamic (CPU only: the whole model exported to ONNX), "
                                      "engine-<backend> (ground() end to end) and engine-<backend>-step (its step "
                                      "alone) (default: those that run on the device)")
    p.add_argument("--precisions", help="fp32 and/or bf16 (default both)")
    p.add_argument("--batch-sizes", help="comma-separated (default 1,8,64,256,1024; on CPU 1,16,64)")
    p.add_argument("--repeats", type=int, help="timed calls per row, at least (default 50)")
    p.add_argument("--min-seconds", type=float, help="each row's block of timed calls lasts at least this (default 3)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 10)")
    p.add_argument("--sections", default="rows,batcher,shared_video", help="comma-separated (default %(default)s)")
    p.add_argument("--concurrency", help="micro-batcher submitter counts (default 1,8,32)")
    p.add_argument("--time-budget", type=float, help="seconds; once spent, remaining groups are skipped (noted)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="small smoke run: batch sizes 1,4, 3 repeats, fp32 (explicit options still win)")
    p.add_argument("--out", default="runs/bench",
                   help="folder for results.json, results.md, latency.png (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module("bench.cli").run(args)
