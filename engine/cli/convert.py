"""`seqpan convert-tf`: the authors' TF weights -> a native checkpoint."""
from __future__ import annotations

import argparse

from ..io.tf_convert import convert_tf


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-tf", help="convert the original TF weights to a native checkpoint")
    p.add_argument("src", help="TF checkpoint directory (needs tensorflow) or golden-format .npz (var/*)")
    p.add_argument("--vocab", required=True, help="the original's processed-dataset pickle (word_dict, char_dict)")
    p.add_argument("--out", required=True, help="output .safetensors checkpoint")
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--tau", type=float, default=0.3)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = convert_tf(args.src, args.vocab, args.out, num_heads=args.num_heads, tau=args.tau)
    print(f"wrote {path}")
    return 0
