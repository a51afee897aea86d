"""The options `--ray` takes (seqpan ground, seqpan extract-features) and the Ray session they run in."""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from ..errors import UsageError
from .options import positive_int

DEFAULT_WORKERS = 2


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """--ray, --ray-address, --workers."""
    p.add_argument("--ray", action="store_true", help="spread the work over a pool of Ray Data workers")
    p.add_argument("--ray-address", help="with --ray: the cluster to join (auto: the one `ray start` runs on "
                                         "this machine); default a new local one")
    p.add_argument("--workers", type=positive_int,
                   help=f"with --ray: workers, one model each (default {DEFAULT_WORKERS})")


def check_ray_args(args: argparse.Namespace, *more: str) -> None:
    """The Ray options (and the options of `more` attribute names) only with --ray."""
    given = [name for name in ("ray_address", "workers", *more) if getattr(args, name) is not None]
    if given and not args.ray:
        raise UsageError(f"{', '.join('--' + n.replace('_', '-') for n in given)}: only with --ray")


def load_offline():
    """engine.offline's modules cluster, ground and results, or a UsageError when Ray Data is missing."""
    try:
        import pyarrow  # noqa: F401 (Ray Data's own dependency; its absence is the error to report)
        import ray.data  # noqa: F401

        from ..offline import cluster, ground, results
    except ImportError as err:
        raise UsageError(f"--ray needs Ray Data ({err.name} is missing): pip install -e '.[serve]'") from None
    return cluster, ground, results


@contextlib.contextmanager
def ray_extractor(args: argparse.Namespace) -> Iterator:
    """Within: an extractor whose `extract_many` runs on `--workers` Ray Data actors (extract-features --ray)."""
    if args.videos is None:
        raise UsageError("--ray extracts a folder: give --videos DIR")
    cluster, _, _ = load_offline()
    from ..offline import extract  # the video packages are there: extract-features checked them
    workers = args.workers or DEFAULT_WORKERS
    with cluster.ray_session(args.ray_address):
        resources, threads = cluster.worker_resources(args.device, workers)
        spec = extract.ExtractorSpec(str(args.i3d), args.preset, args.frames, args.device, args.precision,
                                     args.batch_size, threads)
        yield extract.RayExtractor(spec.build, workers, resources)
