"""The `seqpan` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

# Modules that each expose `register(subparsers)`, adding one subcommand whose handler is
# stored as `func` and returns the process exit code.
COMMAND_MODULES = ("engine.cli_parity", "engine.cli_convert", "engine.cli_ground", "engine.cli_export",
                   "engine.cli_train", "engine.cli_bench")


class UserError(Exception):
    """An error caused by the user's input: reported in one line, no traceback."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every error class that means bad input rather than a bug."""
    from reference.tf_names import WeightsError

    from .backends import BackendError
    from .checkpoint import CheckpointError
    from .convert import ConvertError
    from .dataset import DatasetError
    from .golden import GoldenError
    from .localizer_export import LocalizerOnnxError
    from .train import TrainError
    from .trt import TrtError

    return (UserError, WeightsError, BackendError, CheckpointError, ConvertError, GoldenError,
            FileNotFoundError, PermissionError, IsADirectoryError, LocalizerOnnxError, TrtError,
            DatasetError, TrainError)


def print_json(obj) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqpan", description="Fast, exact SeqPAN video grounding.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_error_types() as err:
        print(f"seqpan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqpan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the package's copy of this module, so that the command modules' `from .cli import
    # UserError` is the very class `main` catches (under -m this file is also `__main__`).
    from engine.cli import main as package_main

    sys.exit(package_main())
