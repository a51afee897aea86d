"""Options that several `seqpan` commands share."""
from __future__ import annotations

import argparse

from ..checks import check_positive_int
from ..data.dataset import FORMATS
from ..errors import UsageError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        return check_positive_int("the value", int(text))
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--format, --features, --durations, --device, --json: a dataset split on disk."""
    p.add_argument("--format", required=True, choices=FORMATS, help="annotation format (also picks the preset)")
    p.add_argument("--features", required=True, help="directory of per-video <vid>.npy clip features")
    p.add_argument("--durations", help="JSON {vid: seconds} (charades format only)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
