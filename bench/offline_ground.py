"""`seqpan ground --requests` in one process vs on Ray Data (`--ray --workers 1` and `--workers 2`),
on the demo's held-out queries replicated to many requests, by feature path and inline; each run a
fresh `seqpan ground` process timed end to end (start-up and Ray's included).

    python -m bench.offline_ground --demo runs/demo [--requests 20000] [--inline 1000] [--small 200]
        [--inline-ray 20000] --out F.json

`--demo` is a `seqpan demo` output folder (its `best.safetensors`, `data/test.txt`, `data/features/`).
Each mode's cost of a request is its time's growth from `--small` requests to the file's, per
request (start-up cancels out); Ray's overhead per request is `--workers 1`'s (one worker with all the
CPUs, as the single process) minus the single process's. `--inline-ray N` adds N inline requests on
Ray alone (a file the single process cannot hold in memory at that size).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.timing import environment


def write_requests(path: Path, demo: Path, count: int, inline: bool) -> None:
    """The held-out queries (test split) as requests, repeated in order to `count` lines, id = index."""
    durations = json.loads((demo / "data" / "durations.json").read_text())
    base = []
    for line in (demo / "data" / "test.txt").read_text().splitlines():
        head, query = line.split("##")
        vid = head.split()[0]
        features = (demo / "data" / "features" / f"{vid}.npy").resolve()
        body = json.dumps({"features": np.load(features).tolist() if inline else str(features), "query": query,
                           "duration": durations[vid]})
        base.append(body[:-1])
    with open(path, "w") as f:
        for i in range(count):
            f.write(f'{base[i % len(base)]}, "id": {i}}}\n')


def timed_run(args: list[str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "ground", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"seqpan ground {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds


MODES = {"single": [], "ray1": ["--ray", "--workers", "1"], "ray2": ["--ray", "--workers", "2"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", required=True)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--inline", type=int, default=1000)
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--inline-ray", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    demo = Path(a.demo)
    ckpt = str(demo / "best.safetensors")
    env = {**environment(torch.device("cpu")), "cores": os.cpu_count()}
    runs = [("small by path", a.small, False, MODES), ("by path", a.requests, False, MODES),
            ("small inline", a.small, True, MODES), ("inline", a.inline, True, MODES)]
    if a.inline_ray:
        runs.append(("inline, Ray only", a.inline_ray, True, {"ray2": MODES["ray2"]}))
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(a.out).parent) as tmp:
        for name, count, inline, modes in runs:
            requests = Path(tmp) / "requests.jsonl"
            write_requests(requests, demo, count, inline)
            row = {"requests": name, "count": count, "file_mb": round(requests.stat().st_size / 1e6, 1)}
            for mode, extra in modes.items():
                seconds = timed_run(["--checkpoint", ckpt, "--requests", str(requests),
                                     "--out", str(Path(tmp) / "out.jsonl"), *extra])
                row[f"{mode}_s"], row[f"{mode}_per_s"] = round(seconds, 2), round(count / seconds, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    marginal = {}
    for small, large in ((rows[0], rows[1]), (rows[2], rows[3])):
        n = large["count"] - small["count"]
        cost = {m: 1000 * (large[f"{m}_s"] - small[f"{m}_s"]) / n for m in MODES}
        marginal[large["requests"]] = {**{f"{m}_ms_per_request": round(c, 3) for m, c in cost.items()},
                                       "ray_overhead_ms_per_request": round(cost["ray1"] - cost["single"], 3),
                                       "ray_fixed_cost_s": round(small["ray1_s"] - small["single_s"], 2)}
    result = {"env": {**env, "load_average_end": list(os.getloadavg())}, "rows": rows, "marginal": marginal}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
