"""`seqpan ground`: ground one query, or a JSONL file of requests."""
from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path

from tqdm import tqdm

from ..engine import PRECISIONS, GroundingEngine
from ..errors import RequestError, UsageError
from ..io.atomic import check_writable, write_atomically
from ..requests import GroundingRequest, GroundingResult, dumps_result, json_error_id, parse_json, request_from_json
from . import print_json


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    single = (args.features, args.query, args.duration)
    if args.requests is None and any(v is None for v in single):
        raise UsageError("give --features, --query and --duration, or --requests FILE --out FILE")
    if args.requests is not None and (args.out is None or any(v is not None for v in single)):
        raise UsageError("--requests needs --out, and takes no --features/--query/--duration")
    if args.max_batch < 1:
        raise UsageError("--max-batch must be at least 1")
    if args.out is not None:
        check_writable(args.out)  # before any work
    engine = GroundingEngine.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                             backend=args.backend, max_batch=args.max_batch)
    if args.requests is None:
        result = engine.ground([GroundingRequest(args.features, args.query, args.duration)])[0]
        if result.error is not None:
            raise UsageError(result.error)
        print_json(result.to_json())
        return 0
    return ground_file(engine, Path(args.requests), Path(args.out))


def parse_requests(path: Path) -> list[GroundingRequest | GroundingResult]:
    """One entry per non-blank line: a request, or an error result naming the line. A UTF-8 BOM
    at the start is skipped; a line that is not UTF-8, not strict JSON or not a valid request is
    that line's error alone."""
    if not path.is_file():
        raise UsageError(f"requests file not found: {path}")
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    entries: list[GroundingRequest | GroundingResult] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        obj = None
        try:
            obj = parse_json(line)
            entries.append(request_from_json(obj, path.parent, default_id=number))
        except RequestError as err:
            entries.append(GroundingResult(id=json_error_id(obj), error=f"line {number}: {err}"))
    return entries


def ground_file(engine: GroundingEngine, requests_path: Path, out: Path) -> int:
    entries = parse_requests(requests_path)
    requests = [e for e in entries if isinstance(e, GroundingRequest)]
    with tqdm(total=len(requests), desc="grounding", unit="query", file=sys.stderr,
              disable=len(requests) < 2) as bar:
        served = iter(engine.ground(requests, progress=bar.update))
    results = [next(served) if isinstance(e, GroundingRequest) else e for e in entries]
    lines = "".join(dumps_result(r) + "\n" for r in results)
    write_atomically(out, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    failed = [r for r in results if r.error is not None]
    for r in failed[:10]:
        print(f"seqpan ground: request {r.id}: {r.error}" if r.id is not None else f"seqpan ground: {r.error}",
              file=sys.stderr)
    print(f"seqpan ground: {len(results) - len(failed)} grounded, {len(failed)} failed -> {out} "
          f"({engine.description})", file=sys.stderr)
    return 1 if failed else 0
