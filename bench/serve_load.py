"""Bounded load test of `seqpan serve` on 127.0.0.1: the single server and Ray Serve with 2 replicas.

For each server and each concurrency (1, 8, 64 clients), a fixed number of POST /v1/ground calls,
one grounding request each (a Charades-STA test query on its video's 64-clip features, read from
the server's --features-root), after a short untimed warm-up. Every answer is checked against the
engine's own answer for that request, computed in this process: nothing lost, nothing duplicated,
equal clip indices and seconds (scores to float32 rounding). Records p50/p99 latency per call and
requests/s over the whole run, and writes `results.json` and `results.md`.

    python -m bench.serve_load --out bench/results/serve-cpu-<date>
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch

from engine import GroundingEngine
from engine.io.atomic import write_atomically
from engine.io.checkpoint import save_checkpoint

from .server_process import ServerProcess, free_port
from .timing import cpu_description, environment, percentile
from .workloads import load_workload, random_model

CONCURRENCY = (1, 8, 64)
# name -> `seqpan serve` options; on 2 cores each Ray replica gets one CPU, so one thread
SERVERS = {"single-1-thread": ["--threads", "1"], "single-2-threads": ["--threads", "2"],
           "ray-2-replicas": ["--ray", "--replicas", "2"]}


def build_inputs(folder: Path, total: int, device: str, backend: str) -> tuple[Path, list[dict], dict, str]:
    """A random-weight Charades-preset checkpoint, the videos' features as .npy files, `total` request
    objects, the engine's own answer to each (by id) and the engine's description."""
    workload = load_workload("charades")
    word_dict, char_dict = workload.vocab()
    ckpt = save_checkpoint(folder / "model.safetensors", random_model(workload), word_dict, char_dict)
    records = workload.take(total)
    for vid in dict.fromkeys(r.vid for r in records):
        np.save(folder / f"{vid}.npy", workload.features(vid))
    bodies = [{"id": i, "features": f"{r.vid}.npy", "query": r.sentence, "duration": r.duration, "video_id": r.vid}
              for i, r in enumerate(records)]
    engine = GroundingEngine.from_checkpoint(ckpt, device=device, backend=backend)
    requests = [engine_request(folder, b) for b in bodies]
    expected = {r.id: r.to_json() for r in engine.ground(requests)}
    return ckpt, bodies, expected, engine.description


def engine_request(folder: Path, body: dict):
    from engine import GroundingRequest

    return GroundingRequest(folder / body["features"], body["query"], body["duration"], video_id=body["video_id"],
                            id=body["id"])


def same_answer(got: dict, expected: dict) -> bool:
    """Equal ids, clip indices and seconds; scores equal to float32 rounding (replicas may use other
    thread counts, which sum in another order)."""
    if set(got) != set(expected) or "error" in expected:
        return got == expected
    keys = ("id", "start_index", "end_index", "start", "end")
    return all(got[k] == expected[k] for k in keys) and math.isclose(got["score"], expected["score"], rel_tol=1e-5)


async def run_level(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], float, list]:
    """`len(bodies)` calls by `concurrency` clients; per-call latency (ms) of the calls answered, wall
    seconds, and each call's (body, status, results, replica); status None: the connection failed."""
    pending = iter(bodies)
    latencies: list[float] = []
    answers: list = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def client_loop():
            for body in pending:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/ground", json={"requests": [body]})
                except httpx.TransportError:  # counted as failed: a connection lost or refused
                    answers.append((body, None, None, None))
                    continue
                latencies.append((time.perf_counter() - started) * 1e3)
                results = response.json().get("results") if response.status_code == 200 else None
                answers.append((body, response.status_code, results, response.headers.get("x-seqpan-replica")))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, answers


def check(answers: list, expected: dict) -> dict:
    """Counts of calls that failed, answers that differ from the engine's, ids lost or duplicated."""
    seen = Counter(body["id"] for body, *_ in answers)
    failed = sum(status != 200 or results is None or len(results) != 1 for _, status, results, _ in answers)
    wrong = sum(1 for body, status, results, _ in answers
                if status == 200 and results and not same_answer(results[0], expected[body["id"]]))
    return {"failed": failed, "mismatched": wrong, "duplicated": sum(n - 1 for n in seen.values() if n > 1)}


def measure(server: str, args: list[str], ckpt: Path, folder: Path, bodies: list[dict], expected: dict,
            counts: dict[int, int], warmup: int, device: str, backend: str) -> list[dict]:
    rows = []
    port = str(free_port()) if "--ray" in args else "0"  # Ray Serve's proxy needs a fixed port
    cmd = [*args, "--checkpoint", str(ckpt), "--features-root", str(folder), "--port", port, "--device", device, "--backend", backend,
           "--max-batch", "64", "--max-wait-ms", "2"]
    with ServerProcess(cmd) as proc:
        for concurrency in CONCURRENCY:
            asyncio.run(run_level(proc.url, bodies[:warmup], min(concurrency, warmup)))  # untimed
            sent = bodies[: counts[concurrency]]
            latencies, wall, answers = asyncio.run(run_level(proc.url, sent, concurrency))
            verdict = check(answers, expected)
            verdict["lost"] = len(set(b["id"] for b in sent) - {b["id"] for b, *_ in answers})
            replicas = Counter(r for *_, r in answers if r is not None)
            rows.append({"server": server, "concurrency": concurrency, "requests": len(sent),
                         "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
                         "requests_per_s": len(sent) / wall, "wall_s": wall, **verdict,
                         "replicas": dict(replicas) if replicas else None})
            print(f"{server:>15} c={concurrency:<3} {len(sent)} calls  p50 {rows[-1]['p50_ms']:.1f} ms  "
                  f"p99 {rows[-1]['p99_ms']:.1f} ms  {rows[-1]['requests_per_s']:.1f} req/s  {verdict}", flush=True)
        rows[-1]["exit_status"] = proc.stop(timeout=120)
    return rows


def render_markdown(results: dict) -> str:
    env = results["env"]
    lines = [f"# `seqpan serve` load test, {env['date']}", "",
             f"Machine: {env['machine']}; engine: {env['engine']}; torch {env['torch']} ({env['torch_threads']} "
             f"threads in the client process).", "", *[f"- {n}" for n in results["notes"]], "",
             "| server | clients | calls | p50 ms | p99 ms | requests/s | failed | mismatched | lost | duplicated |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                     f"| {r['requests_per_s']:.1f} | {r['failed']} | {r['mismatched']} | {r['lost']} "
                     f"| {r['duplicated']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--requests", default="200,400,640", help="calls at concurrency 1,8,64 (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=32, help="untimed calls before each level (default %(default)s)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated among %(default)s")
    parser.add_argument("--device", default="cpu", help="the servers' and the reference engine's device")
    parser.add_argument("--backend", default="auto", help="the servers' and the reference engine's backend")
    parser.add_argument("--note", action="append", default=[], help="a line for the report (e.g. that the "
                                                                     "machine was shared)")
    args = parser.parse_args(argv)
    counts = dict(zip(CONCURRENCY, (int(n) for n in args.requests.split(","))))
    servers = args.servers.split(",")
    if len(counts) != len(CONCURRENCY) or any(s not in SERVERS for s in servers):
        parser.error(f"--requests takes {len(CONCURRENCY)} counts; --servers among {', '.join(SERVERS)}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="seqpan-serve-load-") as tmp:
        folder = Path(tmp)
        os.environ["SEQPAN_CACHE_DIR"] = str(folder / "compiled")  # servers inherit it: no compiled model reused
        ckpt, bodies, expected, engine = build_inputs(folder, max(*counts.values(), args.warmup), args.device,
                                                      args.backend)
        rows = [row for name in servers
                for row in measure(name, SERVERS[name], ckpt, folder, bodies, expected, counts, args.warmup,
                                   args.device, args.backend)]
    env = environment(torch.device(args.device))
    env["machine"], env["engine"] = cpu_description(), engine
    notes = [*args.note,
             "loopback only (127.0.0.1); the load generator (httpx, asyncio) runs on the same machine as the server",
             "one grounding request per call: a Charades-STA test query on a 64-clip video of N(0,1) features "
             "(read from --features-root), random weights with the Charades preset; --max-batch 64, --max-wait-ms 2",
             "latency: per call, from sending to the parsed response; requests/s: calls / wall time of the level; "
             f"an untimed warm-up of {args.warmup} calls before each level",
             "a fresh compiled-model cache (SEQPAN_CACHE_DIR) for the run: with the openvino backend a batch shape "
             "is compiled when first seen (seconds), in the warm-up or, for shapes it did not reach, in the level",
             f"load average (1/5/15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
             f"after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    results = {"env": env, "notes": notes, "rows": rows}
    out = Path(args.out)
    write_atomically(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n"))
    write_atomically(out / "results.md", lambda tmp: Path(tmp).write_text(render_markdown(results)))
    bad = [r for r in rows if r["failed"] or r["mismatched"] or r["lost"] or r["duplicated"]]
    print(f"wrote {out}/results.json and results.md" + (f"; {len(bad)} level(s) with bad answers" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
