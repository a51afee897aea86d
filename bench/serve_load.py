"""Load test of `seqpan serve` on 127.0.0.1, driven by locust, beside the engine itself on the same requests.

The requests are the demo's held-out queries (`seqpan demo` writes them: runs/demo/data/test.txt, the
videos' features under runs/demo/data/features, the checkpoint runs/demo/best.safetensors), each by
its features file's name, read from the server's --features-root. In one run, each in its own block:

1. direct: `GroundingEngine.ground` on all of them at once (max_batch 64, caches on, warmed up, one
   untimed pass first), best of three passes: the engine's own throughput;
2. for each server (the single process; Ray Serve with 2 replicas) and each level (clients x
   queries per body), locust (`bench/locustfile.py`, headless, closed loop, no think time) for a
   warm-up and then `--seconds`: requests/s, queries/s, p50/p99 per call, the mean engine batch
   (from /metrics) and served / direct efficiency; then one pass of every request over httpx, each
   answer checked against the engine's (nothing failed, lost, duplicated or different);
3. with `--soak-seconds`, the single server at 32 clients for that long, its RSS sampled.

    python -m bench.serve_load --out bench/results/serve-cpu-<date>
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from engine import GroundingEngine, GroundingRequest
from engine.data.dataset import read_charades, read_durations
from engine.io.atomic import write_atomically

from .server_process import ServerProcess, free_port
from .timing import cpu_description, percentile

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LEVELS = ((1, 1), (8, 1), (32, 1), (64, 1), (4, 16))  # (clients, queries per body)
# name -> `seqpan serve` options (the single server on CPU: one engine thread fewer than the cores)
SERVERS = {"single": [], "single-2-threads": ["--threads", "2"], "ray-2-replicas": ["--ray", "--replicas", "2"]}
SERVE_OPTIONS = ["--max-batch", "64"]  # and the default --max-wait-ms 0


def demo_requests(data: Path) -> list[dict]:
    """One request object per held-out query of the demo's data folder, its features by file name."""
    records = read_charades(data / "test.txt", read_durations(data / "durations.json"))
    return [{"id": i, "features": f"{r.vid}.npy", "query": r.sentence, "duration": r.duration}
            for i, r in enumerate(records)]


def engine_request(features_root: Path, body: dict) -> GroundingRequest:
    return GroundingRequest(features_root / body["features"], body["query"], body["duration"], id=body["id"])


def direct(checkpoint: Path, features_root: Path, objects: list[dict], passes: int = 3) -> tuple[dict, dict]:
    """The engine's own throughput on `objects` (queries/s, best of `passes` after one untimed pass), its
    latency for each alone (p50/p99 ms, caches warm) and its answer to each, by id."""
    engine = GroundingEngine.from_checkpoint(checkpoint, device="cpu", max_batch=64, features_root=features_root)
    engine.warm_up()
    requests = [engine_request(features_root, o) for o in objects]
    expected = {r.id: r.to_json() for r in engine.ground(requests)}
    seconds, cpu = [], []
    for _ in range(passes):
        began, began_cpu = time.perf_counter(), time.process_time()
        engine.ground(requests)
        seconds.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    single = []
    for request in requests:  # one at a time, caches warm: the latency a lone caller could get
        began = time.perf_counter()
        engine.ground([request])
        single.append((time.perf_counter() - began) * 1e3)
    return {"queries": len(requests), "queries_per_s": len(requests) / min(seconds), "pass_seconds": seconds,
            "cpu_ms_per_query": min(cpu) / len(requests) * 1e3, "single_p50_ms": statistics.median(single),
            "single_p99_ms": percentile(single, 99), "engine": engine.description}, expected


def bodies_of(objects: list[dict], per_body: int) -> list[dict]:
    return [{"requests": objects[i:i + per_body]} for i in range(0, len(objects) - per_body + 1, per_body)]


def run_locust(url: str, bodies_file: Path, clients: int, seconds: float, folder: Path) -> list:
    """One headless locust run: every call's (end, latency ms, queries, status). Its CPU time is
    counted in this process's RUSAGE_CHILDREN."""
    out = folder / "calls.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(clients), "-r",
           str(clients), "-t", f"{max(round(seconds), 1)}s", "--host", url, "--only-summary", "--loglevel",
           "WARNING", "--stop-timeout", "10"]
    env = {**os.environ, "SEQPAN_LOAD_BODIES": str(bodies_file), "SEQPAN_LOAD_OUT": str(out)}
    run = subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         timeout=seconds + 120)
    if not out.exists():
        raise RuntimeError(f"locust wrote no calls (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return json.loads(out.read_text())


def batch_totals(url: str) -> tuple[float, float]:
    """(sum, count) of the seqpan_batch_size histogram (0, 0 when the server does not report it)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("seqpan_batch_size_sum", "seqpan_batch_size_count"))}
    return values.get("seqpan_batch_size_sum", 0.0), values.get("seqpan_batch_size_count", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def summarize(calls: list, direct_qps: float) -> dict:
    """Throughput over the span from the first call's end to the last's, exact latency percentiles."""
    ok = [c for c in calls if c[3] == 200]
    ends = sorted(c[0] for c in ok)
    span = ends[-1] - ends[0] if len(ends) > 1 else math.nan
    latencies = [c[1] for c in ok]
    queries = sum(c[2] for c in ok[1:]) if ok else 0
    qps = queries / span if span > 0 else math.nan
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    return {"calls": len(calls), "failed": len(calls) - len(ok), "requests_per_s": (len(ok) - 1) / span,
            "queries_per_s": qps, "p50_ms": p50, "p99_ms": p99, "p99_over_p50": p99 / p50,
            "efficiency": qps / direct_qps}


def same_answer(got: dict, expected: dict) -> bool:
    """Equal ids, clip indices and seconds; scores equal to float32 rounding (replicas may use other
    thread counts, which sum in another order)."""
    if set(got) != set(expected) or "error" in expected:
        return got == expected
    keys = ("id", "start_index", "end_index", "start", "end")
    return all(got[k] == expected[k] for k in keys) and math.isclose(got["score"], expected["score"], rel_tol=1e-5)


async def verify(url: str, objects: list[dict], expected: dict, clients: int = 8) -> dict:
    """Every request once, one per call, by `clients` clients: calls failed, answers different from the
    engine's, ids lost or duplicated."""
    pending, answers = iter(objects), []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def client_loop():
            for obj in pending:
                try:
                    response = await client.post("/v1/ground", json={"requests": [obj]})
                    results = response.json().get("results") if response.status_code == 200 else None
                except httpx.TransportError:
                    results = None
                answers.append((obj["id"], results))

        await asyncio.gather(*(client_loop() for _ in range(clients)))
    seen = Counter(i for i, _ in answers)
    return {"failed": sum(r is None or len(r) != 1 for _, r in answers),
            "mismatched": sum(1 for i, r in answers if r and len(r) == 1 and not same_answer(r[0], expected[i])),
            "lost": len({o["id"] for o in objects} - set(seen)), "duplicated": sum(n - 1 for n in seen.values())}


def measure(server: str, checkpoint: Path, features_root: Path, objects: list[dict], expected: dict,
            direct_qps: float, seconds: float, warmup: float, folder: Path) -> dict:
    """Every level against one server, then the answers checked."""
    port = str(free_port()) if "--ray" in SERVERS[server] else "0"  # Ray Serve's proxy needs a fixed port
    cmd = [*SERVERS[server], "--checkpoint", str(checkpoint), "--features-root", str(features_root), "--port", port,
           "--device", "cpu", *SERVE_OPTIONS]
    rows = []
    with ServerProcess(cmd) as proc:
        for clients, per_body in LEVELS:
            bodies_file = folder / f"bodies-{per_body}.json"
            bodies_file.write_text(json.dumps(bodies_of(objects, per_body)))
            run_locust(proc.url, bodies_file, clients, warmup, folder)  # untimed
            before, server_cpu, client_cpu = batch_totals(proc.url), cpu_seconds(proc.proc.pid), children_cpu_seconds()
            calls = run_locust(proc.url, bodies_file, clients, seconds, folder)
            server_cpu, client_cpu = cpu_seconds(proc.proc.pid) - server_cpu, children_cpu_seconds() - client_cpu
            after = batch_totals(proc.url)
            row = summarize(calls, direct_qps)
            batches, queries = after[1] - before[1], sum(c[2] for c in calls if c[3] == 200)
            single = not server.startswith("ray")  # Ray's replicas run in processes of their own
            row.update(server=server, clients=clients, queries_per_body=per_body,
                       mean_batch=(after[0] - before[0]) / batches if single and batches else None,  # a
                       # scrape through Ray's proxy reaches one replica or the other
                       server_cpu_ms_per_query=server_cpu / queries * 1e3 if single and queries else None,
                       client_cpu_ms_per_query=client_cpu / queries * 1e3 if queries else None,
                       server_rss_mib=rss_mib(proc.proc.pid) if single else None)
            rows.append(row)
            print(f"{server:>14} {clients:>2} clients x {per_body:>2}: {row['queries_per_s']:7.1f} q/s "
                  f"({row['efficiency']:.2f}x direct), p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                  f"mean batch {row['mean_batch'] or math.nan:.1f}, CPU ms/query server "
                  f"{row['server_cpu_ms_per_query'] or math.nan:.2f} client {row['client_cpu_ms_per_query']:.2f}, "
                  f"failed {row['failed']}", flush=True)
        verdict = asyncio.run(verify(proc.url, objects, expected))
        print(f"{server:>14} answers: {verdict}", flush=True)
        exit_status = proc.stop(timeout=120)
    return {"server": server, "rows": rows, "answers": verdict, "exit_status": exit_status}


def soak(checkpoint: Path, features_root: Path, objects: list[dict], seconds: float, folder: Path) -> dict:
    """The single server at 32 clients for `seconds`, as locust runs of 30 s one after another, its
    RSS sampled at the start and after each run."""
    cmd = ["--checkpoint", str(checkpoint), "--features-root", str(features_root), "--port", "0", "--device", "cpu",
           *SERVE_OPTIONS]
    bodies_file = folder / "bodies-1.json"
    bodies_file.write_text(json.dumps(bodies_of(objects, 1)))
    samples = []
    with ServerProcess(cmd) as proc:
        samples.append((0.0, rss_mib(proc.proc.pid)))
        began = time.monotonic()
        calls = 0
        while time.monotonic() - began < seconds:
            calls += len(run_locust(proc.url, bodies_file, 32, min(30.0, seconds), folder))
            samples.append((time.monotonic() - began, rss_mib(proc.proc.pid)))
            print(f"soak {samples[-1][0]:.0f} s: RSS {samples[-1][1]:.0f} MiB, {calls} calls", flush=True)
        proc.stop(timeout=120)
    return {"seconds": seconds, "calls": calls, "rss_mib": samples,
            "growth_mib": samples[-1][1] - samples[1][1] if len(samples) > 2 else None}


def render_markdown(results: dict) -> str:
    d = results["direct"]
    lines = [f"# `seqpan serve` under locust, {results['date']}", "",
             f"Machine: {results['machine']}. Engine: {d['engine']}.", "", *[f"- {n}" for n in results["notes"]], "",
             f"Direct (`GroundingEngine.ground`, all {d['queries']} queries in one call, max_batch 64): "
             f"**{d['queries_per_s']:.0f} queries/s** (best of {len(d['pass_seconds'])} passes), "
             f"{d['cpu_ms_per_query']:.2f} CPU ms per query; each query alone (B=1, caches warm): p50 "
             f"{d['single_p50_ms']:.2f} ms, p99 {d['single_p99_ms']:.2f} ms.", "",
             "| server | clients | queries/body | requests/s | queries/s | served/direct | p50 ms | p99 ms | p99/p50 "
             "| mean batch | CPU ms/query: server | client | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for server in results["servers"]:
        for r in server["rows"]:
            batch = "–" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
            server_cpu = "–" if r["server_cpu_ms_per_query"] is None else f"{r['server_cpu_ms_per_query']:.2f}"
            lines.append(f"| {r['server']} | {r['clients']} | {r['queries_per_body']} | {r['requests_per_s']:.0f} "
                         f"| {r['queries_per_s']:.0f} | {r['efficiency']:.2f}x | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                         f"| {r['p99_over_p50']:.1f} | {batch} | {server_cpu} | {r['client_cpu_ms_per_query']:.2f} "
                         f"| {r['failed']} |")
    lines.append("")
    for server in results["servers"]:
        lines.append(f"- {server['server']}: every request once over httpx, answers against the engine's: "
                     f"{server['answers']}; exit status {server['exit_status']}")
    if results.get("soak"):
        s = results["soak"]
        lines.append(f"- soak: single server, 32 clients, {s['seconds']:.0f} s, {s['calls']} calls; RSS (MiB) "
                     + ", ".join(f"{t:.0f} s: {m:.0f}" for t, m in s["rss_mib"])
                     + f"; growth after the first window {s['growth_mib']:.0f} MiB")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/best.safetensors"))
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data"),
                        help="the demo's data folder: test.txt, durations.json, features/ (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per level (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=8.0, help="untimed seconds before each level")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated among %(default)s")
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="then the single server at 32 clients "
                                                                       "this long, RSS sampled (default: none)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    if any(s not in SERVERS for s in servers):
        parser.error(f"--servers among {', '.join(SERVERS)}")
    for path in (args.checkpoint, args.data / "test.txt", args.data / "features"):
        if not path.exists():
            parser.error(f"{path} does not exist: run `seqpan demo` first, or give --checkpoint and --data")
    features_root = (args.data / "features").resolve()
    objects = demo_requests(args.data)
    load_before = os.getloadavg()
    direct_row, expected = direct(args.checkpoint, features_root, objects)
    print(f"direct: {direct_row['queries_per_s']:.0f} queries/s; alone p50 {direct_row['single_p50_ms']:.2f} ms",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="seqpan-serve-load-") as tmp:
        runs = [measure(name, args.checkpoint, features_root, objects, expected, direct_row["queries_per_s"],
                        args.seconds, args.warmup, Path(tmp)) for name in servers]
        soaked = soak(args.checkpoint, features_root, objects, args.soak_seconds, Path(tmp)) \
            if args.soak_seconds > 0 else None
    notes = [*args.note,
             "loopback only (127.0.0.1); locust (FastHttpUser, one process) runs on the same cores as the server",
             "single-query bodies: the demo's held-out queries in turn, by features file name (--features-root); "
             f"16-query bodies: consecutive queries; `seqpan serve {' '.join(SERVE_OPTIONS)}`",
             f"each level: {args.warmup:.0f} s untimed, then {args.seconds:.0f} s timed; throughput over the span "
             "of the timed calls; latency per call as the locust user sees it",
             f"load average before: {', '.join(f'{x:.2f}' for x in load_before)}; "
             f"after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    results = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_description(), "notes": notes,
               "direct": direct_row, "servers": runs, "soak": soaked}
    out = Path(args.out)
    write_atomically(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n"))
    write_atomically(out / "results.md", lambda tmp: Path(tmp).write_text(render_markdown(results)))
    bad = [r["server"] for r in runs if any(r["answers"].values()) or any(row["failed"] for row in r["rows"])]
    print(f"wrote {out}/results.json and results.md" + (f"; bad answers from {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
