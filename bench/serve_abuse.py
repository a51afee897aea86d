"""Memory and time of `seqpan serve` under the bodies of the 2026-12-06 probe (issue 24), on 127.0.0.1.

A random-weight Charades-preset model (1024-dimensional features). For each `--max-bodies-mb`:
one 16 MB body `{"requests": [0,0,...]}` (8.3 million entries), one 15.9 MB body of inline
features (~2,200 clips of numbers written with two decimals) alone, then 32 clients posting that
body at once. Records each answer's
status, the wall time, and the server's resident memory before and its peak (VmHWM) after, and
writes `results.json` and `results.md`.

    python -m bench.serve_abuse --out bench/results/cpu-<date>-serve-abuse
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from engine.io.checkpoint import save_checkpoint

from .server_process import ServerProcess
from .timing import cpu_description
from .workloads import load_workload, random_model

MB = 1 << 20


def memory_mb(proc: ServerProcess) -> dict[str, float]:
    """The server's resident size now (VmRSS) and its peak so far (VmHWM), in MiB."""
    with open(f"/proc/{proc.proc.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


async def post_all(url: str, body: bytes, clients: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        responses = await asyncio.gather(*(client.post("/v1/ground", content=body) for _ in range(clients)))
    return [r.status_code for r in responses]


def reset_peak(proc: ServerProcess) -> None:
    """Start the server's VmHWM afresh from its present size (Linux 4.0+)."""
    with open(f"/proc/{proc.proc.pid}/clear_refs", "w") as f:
        f.write("5")


def case(proc: ServerProcess, name: str, body: bytes, clients: int) -> dict:
    reset_peak(proc)
    before = memory_mb(proc)
    started = time.perf_counter()
    codes = asyncio.run(post_all(proc.url, body, clients))
    wall = time.perf_counter() - started
    after = memory_mb(proc)
    row = {"case": name, "body_mb": len(body) / MB, "clients": clients, "codes": dict(Counter(codes)),
           "wall_s": wall, "rss_before_mb": before["VmRSS"], "peak_mb": after["VmHWM"], "rss_after_mb": after["VmRSS"]}
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_abuse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--budgets", default="64,32", help="--max-bodies-mb values to run (default %(default)s)")
    args = parser.parse_args(argv)
    workload = load_workload("charades")
    row_values = np.round(np.random.default_rng(0).standard_normal((1, 1024)), 2)  # 7 bytes a value, as probed
    row = json.dumps(row_values.tolist()[0]).encode()
    inline = b'{"requests": [{"query": "a person sits on a chair", "duration": 30.0, "features": [' + \
        b", ".join([row] * int(15.9e6 // (len(row) + 2))) + b"]}]}"  # 15.9 MB
    zeros = (b'{"requests": [' + b",".join([b"0"] * 8_300_000) + b"]}")[: 16 * MB - 2].rsplit(b",", 1)[0] + b"]}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.safetensors", random_model(workload), *workload.vocab())
        for budget in args.budgets.split(","):
            with ServerProcess(["--checkpoint", str(ckpt), "--port", "0", "--threads", "1",
                                "--max-bodies-mb", budget]) as proc:
                for name, body, clients in (("16 MB of [0,0,...]", zeros, 1), ("15.9 MB inline, alone", inline, 1),
                                            ("15.9 MB inline, 32 clients", inline, 32)):
                    rows.append({"max_bodies_mb": float(budget), **case(proc, name, body, clients)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"machine": cpu_description(), "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d")}
    (out / "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    lines = [f"# `seqpan serve` under the probe's bodies, {env['date']}", "",
             f"Machine: {env['machine']}; load average at the end {env['load'][0]:.1f} (a shared machine); "
             "`--threads 1`, random-weight Charades-preset model.", "",
             "| --max-bodies-mb | case | clients | answers | wall s | RSS before MiB | peak MiB | RSS after MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        answers = ", ".join(f"{n}x {code}" for code, n in sorted(r["codes"].items()))
        lines.append(f"| {r['max_bodies_mb']:g} | {r['case']} | {r['clients']} | {answers} | {r['wall_s']:.1f} "
                     f"| {r['rss_before_mb']:.0f} | {r['peak_mb']:.0f} | {r['rss_after_mb']:.0f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
