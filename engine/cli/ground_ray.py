"""`seqpan ground --requests IN --out OUT --ray`: the requests file grounded on Ray Data by a pool of
workers, one engine each (engine/offline)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import UsageError
from ..requests import GroundingResult
from .extract_features import load_video_package
from .ray_options import DEFAULT_WORKERS, load_offline

DEFAULT_CHUNK = 512  # requests a worker reads and grounds per call


def run_ray(args: argparse.Namespace) -> tuple[int, int, list[GroundingResult], Path, str]:
    """Ground `args.requests` into `args.out` on Ray; what `report_results` reports: the results, the
    failed ones, the first failures, the output and what ran them."""
    if args.requests is None or args.plot is not None:
        raise UsageError("--ray grounds a file: give --requests FILE --out FILE")
    if args.i3d is not None:
        load_video_package()  # the video packages are there (the workers need them too)
    cluster, offline, results = load_offline()
    workers = args.workers or DEFAULT_WORKERS
    with cluster.ray_session(args.ray_address):
        resources, threads = cluster.worker_resources(args.device, workers)
        spec = offline.EngineSpec(str(args.checkpoint), args.device, args.precision, args.backend, args.max_batch,
                                  args.i3d, args.preset, threads)
        rows, tables = offline.ground_requests(args.requests, spec.build, workers, args.batch_size or DEFAULT_CHUNK,
                                               resources, args.top_k, args.nms)
        with tqdm(total=rows, desc="grounding", unit="query", file=sys.stderr, disable=rows < 2) as bar:
            writer = results.ResultWriter(args.out, bar.update)
            writer.write(tables)
    failures = [GroundingResult(f.get("id"), error=f["error"]) for f in writer.failed]
    return writer.count, writer.failed_count, failures, Path(args.out), f"{workers} Ray Data workers"
