"""What the cross-request video cache saves: `engine.ground` on the demo's held-out queries at B=1 and
B=64, with the video cache off and with it warm (the query cache warm in both, so the difference is
the video encoder alone), each in its own block; answers compared.

    python -m bench.video_cache_share --out bench/results/<machine>-<date>/video-cache
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from engine import GroundingEngine
from engine.io.atomic import write_atomically

from .serve_load import demo_requests, engine_request
from .timing import cpu_description


def timed(engine: GroundingEngine, batches: list, repeats: int) -> tuple[float, list]:
    """Median ms per `engine.ground(batch)` over `repeats` rounds of every batch, after one untimed
    round; and the answers of that round."""
    answers = [r.to_json() for batch in batches for r in engine.ground(batch)]
    times = []
    for _ in range(repeats):
        for batch in batches:
            began = time.perf_counter()
            engine.ground(batch)
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times), answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.video_cache_share", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/best.safetensors"))
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    root = (args.data / "features").resolve()
    objects = demo_requests(args.data)
    rows = []
    for size in (1, 64):
        batches = [[engine_request(root, o) for o in objects[i:i + size]]
                   for i in range(0, min(len(objects), 64 * 4) - size + 1, size)][: 64 if size == 1 else 4]
        row = {"batch": size, "calls": len(batches),
               "videos_per_call": statistics.mean(len({r.features for r in b}) for b in batches)}
        answers = {}
        for label, video_cache in (("video cache off", 0), ("video cache warm", 4096)):
            engine = GroundingEngine.from_checkpoint(args.checkpoint, device="cpu", max_batch=64, features_root=root,
                                                     video_cache=video_cache)
            engine.warm_up()
            row[label], answers[label] = timed(engine, batches, args.repeats)
            del engine
        row["saved"] = 1 - row["video cache warm"] / row["video cache off"]
        row["identical_answers"] = answers["video cache off"] == answers["video cache warm"]
        rows.append(row)
        print(f"B={size}: {row['video cache off']:.2f} ms cold, {row['video cache warm']:.2f} ms warm "
              f"({row['saved']:.0%} saved, {row['videos_per_call']:.1f} videos a call), identical answers: "
              f"{row['identical_answers']}", flush=True)
    results = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_description(), "rows": rows}
    lines = [f"# The video cache's share of `engine.ground`, {results['date']}", "", f"Machine: {results['machine']}. "
             "Demo checkpoint, its held-out queries in file order; query cache warm in both columns; median ms "
             "per call.", "", "| batch | calls | videos a call | video cache off | video cache warm | saved | answers |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['calls']} | {r['videos_per_call']:.1f} | {r['video cache off']:.2f} | "
              f"{r['video cache warm']:.2f} | {r['saved']:.0%} | {'identical' if r['identical_answers'] else 'DIFFER'} |"
              for r in rows]
    out = Path(args.out)
    write_atomically(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n"))
    write_atomically(out / "results.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return 0 if all(r["identical_answers"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
