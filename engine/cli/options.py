"""Options that several `seqpan` commands share."""
from __future__ import annotations

import argparse

from ..data.dataset import FORMATS


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--format, --features, --durations, --device, --json: a dataset split on disk."""
    p.add_argument("--format", required=True, choices=FORMATS, help="annotation format (also picks the preset)")
    p.add_argument("--features", required=True, help="directory of per-video <vid>.npy clip features")
    p.add_argument("--durations", help="JSON {vid: seconds} (charades format only)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
