"""How far `--frames jpeg` (the original's JPEG round trip) and `--frames direct` (decoded frames as
they are) put the I3D features apart, with He-scaled random I3D weights (DESIGN.md: PyTorch's
default initialisation would hide the difference), on generated videos.

    python -m bench.video_frame_modes [--videos 3] [--frames 40] --out F.json

Reports per video and preset ‖f_jpeg − f_direct‖ / ‖f_jpeg‖ over all feature values, and as a
yardstick the same measure between the features of two different videos.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.video_timing import machine
from engine.video.extract import FeatureExtractor
from engine.video.presets import PRESETS
from engine.video.eager_i3d import WindowRunner
from engine.video.synthetic import moving_pattern, write_video
from engine.video.weights import random_i3d


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40, help="frames per generated 30 fps video")
    parser.add_argument("--presets", default="charades,activitynet")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    runner = WindowRunner(random_i3d(0))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sizes = [(320, 240), (480, 270), (160, 120)]
        paths = []
        for v in range(args.videos):
            width, height = sizes[v % len(sizes)]
            images = [moving_pattern(1000 * v + i, width, height) for i in range(args.frames)]
            paths.append(write_video(Path(folder) / f"v{v}.mp4", args.frames, width, height, 30, images=images))
        for name in args.presets.split(","):
            features = {mode: [FeatureExtractor(runner, PRESETS[name], mode).extract(p) for p in paths]
                        for mode in ("jpeg", "direct")}
            for path, jpeg, direct in zip(paths, features["jpeg"], features["direct"]):
                rows.append({"preset": name, "video": path.name, "shape": list(jpeg.shape),
                             "jpeg_vs_direct_rel": rel(direct, jpeg)})
                print(json.dumps(rows[-1]), flush=True)
            first, second = features["jpeg"][0], features["jpeg"][1 % len(paths)]
            steps = min(len(first), len(second))
            rows.append({"preset": name, "yardstick": "two different videos, jpeg",
                         "rel": rel(second[:steps], first[:steps])})
            print(json.dumps(rows[-1]), flush=True)
    env = {**machine(torch.device("cpu")),
           "videos": "generated: textured moving colour patterns with noise (sigma 10), H.264, 30 fps"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
