"""Single-request latency of `GroundingEngine.ground` after warm-up, on the demo's held-out queries,
with the shape plan's cost: how many compiled models, how long warm-up takes, the disk and memory
they take, and whether anything was compiled on a request's path afterwards.

The demo's data (`seqpan demo`'s synthesized Charades-STA features and its held-out split) with a
random-weight model of the demo's config (timing does not depend on trained values), and, for the
paper-size model, the charades preset on the same queries. Each request is grounded alone, in file
order, for `--passes` passes.

    python -m bench.engine_latency --out bench/results/<dir>
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from engine import GroundingEngine, GroundingRequest
from engine.data.dataset import read_annotations
from engine.data.synth import build_synthetic_charades
from engine.data.text import build_vocab
from engine.train.demo import DEMO_MODEL
from reference.config import preset
from reference.testing import random_model

from .timing import environment, percentile, summarize


def rss_mib() -> float:
    """This process's resident memory now (MiB, from /proc), or its peak where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def held_out_requests(folder: Path) -> tuple[list[GroundingRequest], tuple[dict, dict]]:
    """The demo's held-out queries as requests on their `.npy` features, and the queries' vocabulary."""
    synth = build_synthetic_charades(folder)
    records = read_annotations(synth.splits["test"], "charades", synth.durations)
    requests = [GroundingRequest(str(synth.features / f"{r.vid}.npy"), r.sentence, r.duration, video_id=r.vid, id=i)
                for i, r in enumerate(records)]
    return requests, build_vocab(r.words for r in records)


def measure(name: str, overrides: dict, requests: list[GroundingRequest], vocab: tuple[dict, dict], passes: int,
            cache_dir: Path, max_batch: int) -> dict:
    """Warm-up cost and per-request latency of one model config."""
    cfg = preset("charades", len(vocab[0]), len(vocab[1]), **overrides)
    before = rss_mib()
    engine = GroundingEngine(random_model(cfg, seed=0), *vocab, device="cpu", max_batch=max_batch,
                             backend_options={"cache_dir": cache_dir / name})
    began = time.perf_counter()
    engine.warm_up()
    warm_up_s = time.perf_counter() - began
    loaded = engine.step.loads
    after_warm_up = rss_mib()
    disk = sum(p.stat().st_size for p in (cache_dir / name).glob("*.engine"))
    passes_out = []
    for _ in range(passes):
        times = []
        for request in requests:
            start = time.perf_counter()
            result = engine.ground([request])[0]
            times.append((time.perf_counter() - start) * 1e3)
            if result.error is not None:
                raise RuntimeError(f"request {request.id}: {result.error}")
        passes_out.append({**summarize(times, 1), "max_ms": max(times), "p99_over_p50": percentile(times, 99)
                           / summarize(times, 1)["p50_ms"]})
    return {"model": name, "config": overrides, "max_batch": max_batch, "plan_shapes": len(engine.plan),
            "plan": {"clips": engine.plan.clips, "words": engine.plan.words, "chars": engine.plan.chars,
                     "batches": engine.plan.batches},
            "models_loaded_by_warm_up": loaded, "warm_up_s": warm_up_s, "disk_cache_mib": disk / 2**20,
            "rss_mib_before": before, "rss_mib_after_warm_up": after_warm_up,
            "rss_mib_after_requests": rss_mib(), "models_loaded_after_warm_up": engine.step.loads - loaded,
            "requests": len(requests), "passes": passes_out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for engine_latency.json")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=64, help="the engine's max_batch (seqpan serve's default)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        requests, vocab = held_out_requests(folder / "demo")
        results = {"env": environment(__import__("torch").device("cpu")), "runs": [
            measure(name, overrides, requests, vocab, args.passes, folder / "cache", args.max_batch)
            for name, overrides in (("demo", DEMO_MODEL), ("charades-preset", {}))]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_latency.json").write_text(json.dumps(results, indent=1))
    for run in results["runs"]:
        last = run["passes"][-1]
        print(f"{run['model']}: {run['plan_shapes']} shapes, warm-up {run['warm_up_s']:.1f} s, "
              f"disk {run['disk_cache_mib']:.0f} MiB, RSS {run['rss_mib_before']:.0f} -> "
              f"{run['rss_mib_after_warm_up']:.0f} MiB, loaded after warm-up {run['models_loaded_after_warm_up']}; "
              f"single requests p50 {last['p50_ms']:.2f} ms, p99 {last['p99_ms']:.2f} ms "
              f"({last['p99_over_p50']:.2f}x), max {last['max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
