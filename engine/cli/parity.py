"""`seqpan parity`: a backend's outputs on a golden file, compared with the original's."""
from __future__ import annotations

import argparse

from ..backends import BACKENDS
from ..parity import DTYPES, run_parity
from . import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parity", help="run a backend on a golden file and compare with the original model")
    p.add_argument("--golden", required=True, help="golden .npz (in/*, var/*, out/*, alone/*)")
    p.add_argument("--backend", default="reference", choices=list(BACKENDS))
    p.add_argument("--padding", default="batch", choices=["batch", "isolated"])
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a short summary)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = run_parity(args.golden, args.backend, args.padding, args.dtype, args.device)
    if args.json:
        print_json(result)
    else:
        print(f"{result['golden']} [{args.backend}, {args.padding}, {args.dtype}]")
        print(f"  start_index {result['start_index']}  end_index {result['end_index']}")
        if "indices_equal" in result:
            print(f"  original: start {result['expected_start_index']}  end {result['expected_end_index']}")
            print(f"  indices equal: {result['indices_equal']}  logits relative error: "
                  f"{result['logits_rel_err']:.2e}")
    ok = result.get("indices_equal", True) and result.get("logits_rel_err", 0.0) <= 1e-4
    return 0 if ok else 1
