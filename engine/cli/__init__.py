"""The `seqpan` command line: one entry point, one module per subcommand."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from reference.errors import SeqPANError

from ..errors import one_line

# Modules that each expose `register(subparsers)`, adding one subcommand whose handler is stored
# as `func` and returns the process exit code.
COMMAND_MODULES = ("parity", "convert", "ground", "export", "train", "eval", "demo", "bench", "extract_features",
                   "serve")


def print_json(obj) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The `seqpan` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="seqpan", description="Fast, exact SeqPAN video grounding.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input (SeqPANError) and failed file access (OSError) become one line
    on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SeqPANError, OSError) as err:
        print(f"seqpan {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqpan {args.command}: interrupted", file=sys.stderr)
        return 130
