"""What reading a request's features from JSON costs, by their form: a nested list of numbers, or
binary features (`{"shape", "dtype": "float32", "base64"}`), for videos of 64 and 256 clips of
1024 random float32 values. Each sample is one entry read by `engine.wire.entry_from_json` and its
features checked and made float32 by `load_features`, as the engine's preparation does; the forms
are timed in turn. Writes `results.json` and `results.md`.

    python -m bench.wire_features --out bench/results/cpu-<date>-wire-features
"""
from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

import numpy as np
import torch

from engine.data.features import load_features
from engine.wire import entry_from_json

from .timing import cpu_description, percentile, time_interleaved


def entry_bytes(features) -> bytes:
    return json.dumps({"features": features, "query": "a person sits in a chair", "duration": 30.0}).encode()


def forms(clips: int) -> dict[str, bytes]:
    video = np.random.default_rng(clips).standard_normal((clips, 1024)).astype(np.float32)
    return {"list": entry_bytes(video.tolist()),
            "base64": entry_bytes({"shape": [clips, 1024], "dtype": "float32",
                                   "base64": base64.b64encode(video.tobytes()).decode()})}


def read(body: bytes) -> np.ndarray:
    return load_features(entry_from_json(body, "entry").features, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for clips in (64, 256):
        bodies = forms(clips)
        times = time_interleaved({name: (lambda b=body: read(b)) for name, body in bodies.items()},
                                 torch.device("cpu"), warmup=3, repeats=args.repeats)
        for name, body in bodies.items():
            rows.append({"clips": clips, "form": name, "entry_bytes": len(body), "p50_ms": percentile(times[name], 50),
                         "p99_ms": percentile(times[name], 99)})
    result = {"machine": cpu_description(), "load_average": os.getloadavg(), "repeats": args.repeats, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Reading features from JSON, by form ({result['machine']}; load average at the start "
             f"{result['load_average'][0]:.1f})", "", "| clips x 1024 | form | entry bytes | p50 ms | p99 ms |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['clips']} | {r['form']} | {r['entry_bytes']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
              for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
