"""I3D feature-extraction speed in frames/s: windows batched vs one window at a time (the original's
way), in one process on the same windows, the batch sizes interleaved within each repeat.

    python -m bench.video_timing [--device cpu|cuda] [--precisions fp32,bf16] [--batch-sizes 1,8]
        [--window 16] [--windows 8] [--repeats 3] [--cuda-graphs off|on|both] [--video-frames N] --out F.json

With `--side-by-side` (CPU) it times whole pipelines instead, each in its own block (the machine's
load recorded before and after each) on generated 320x240 30 fps videos of `--seconds` (Charades
preset; `--codec`, default H.264): the original (the ffmpeg command line writing JPEG files, OpenCV
reading them, eager I3D window by window), the engine with eager torch (windows batched) and the engine with I3D
compiled by OpenVINO in f32 and bf16; end to end and network only (the same windows, preprocessed
beforehand), the features' error against the original's, the grounding answers bf16 changes, and
startup (import, weights, compile or cache load) in fresh processes.

`model` rows time the I3D runner on preprocessed windows (random crops: the time does not depend on
the pixels, nor on the He-scaled random weights). `video` rows time the whole path on a generated
320x240 video: decoding, the JPEG round trip, preprocessing and I3D (needs `av` and `cv2`; skipped
with the reason otherwise). frames/s counts input frames.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.timing import environment, sync
from engine.video.eager_i3d import WindowRunner
from engine.video.weights import random_i3d


def machine(device: torch.device) -> dict:
    """bench.timing's environment, plus the CPU model, the host and its load (the machine may be shared)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return {**environment(device), "cpu_model": models[0] if models else None, "host": os.uname().nodename,
            "load_average": os.getloadavg()}


def time_model(runner_for, batch_sizes, window: int, windows: int, repeats: int, device) -> list[dict]:
    """Seconds to run `windows` windows of `window` frames at each batch size, interleaved."""
    crops = np.random.default_rng(0).integers(0, 256, (windows, window, 224, 224, 3), dtype=np.uint8)
    runners = {b: runner_for(b) for b in batch_sizes}
    for b, runner in runners.items():  # warm-up (and CUDA graph capture) outside the timing
        runner(crops[:b])
    times = {b: [] for b in batch_sizes}
    for _ in range(repeats):
        for b, runner in runners.items():
            sync(device)
            start = time.perf_counter()
            for i in range(0, windows, b):
                runner(crops[i:i + b])
            sync(device)
            times[b].append(time.perf_counter() - start)
    return [{"kind": "model", "batch_size": b, "window": window, "windows": windows,
             "seconds_median": statistics.median(t), "seconds": t,
             "frames_per_s": windows * window / statistics.median(t)} for b, t in times.items()]


def time_video(runner_for, batch_sizes, window: int, frames: int, repeats: int) -> list[dict]:
    """Seconds to extract a generated video's features end to end at each batch size, interleaved."""
    from engine.video.extract import FeatureExtractor
    from engine.video.frames import video_crops
    from engine.video.presets import PRESETS
    from engine.video.synthetic import write_video

    preset = replace(PRESETS["activitynet"], window=window)
    with tempfile.TemporaryDirectory() as folder:
        path = write_video(Path(folder) / "bench.mp4", frames, 320, 240, rate=30)
        extractors = {b: FeatureExtractor(runner_for(b), preset, batch_size=b) for b in batch_sizes}
        decode_times, times = [], {b: [] for b in batch_sizes}
        for _ in range(repeats):
            start = time.perf_counter()
            count = sum(1 for _ in video_crops(path, preset))
            decode_times.append(time.perf_counter() - start)
            for b, extractor in extractors.items():
                start = time.perf_counter()
                extractor.extract(path)
                times[b].append(time.perf_counter() - start)
    rows = [{"kind": "video", "stage": "decode+jpeg+preprocess", "frames": count,
             "seconds_median": statistics.median(decode_times), "seconds": decode_times,
             "frames_per_s": count / statistics.median(decode_times)}]
    rows += [{"kind": "video", "stage": "end to end", "batch_size": b, "window": window, "frames": count,
              "seconds_median": statistics.median(t), "seconds": t, "frames_per_s": count / statistics.median(t)}
             for b, t in times.items()]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default=None, help="comma list (default fp32 on CPU, fp32,bf16 on CUDA)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cuda-graphs", choices=("off", "on", "both"), default="off")
    parser.add_argument("--video-frames", type=int, default=0, help="also time a generated video of N frames")
    parser.add_argument("--side-by-side", action="store_true", help="time whole pipelines (see above)")
    parser.add_argument("--pipelines", help="with --side-by-side: comma list of original, eager, openvino-fp32, "
                        "openvino-bf16 (default: all)")
    parser.add_argument("--seconds", default="10,40", help="with --side-by-side: video lengths, comma list")
    parser.add_argument("--codec", default="libx264", help="with --side-by-side: the videos' codec (mpeg4: "
                        "Debian's ffmpeg and PyAV's libavcodec decode it differently by a little)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.side_by_side:
        from bench.video_pipelines import side_by_side

        pipelines = args.pipelines.split(",") if args.pipelines else None
        result = side_by_side(pipelines, [int(s) for s in args.seconds.split(",")], args.repeats, args.codec)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"env": machine(torch.device("cpu")), **result}, indent=1) + "\n")
        return 0
    device = torch.device(args.device)
    precisions = (args.precisions or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    graphs = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graphs]
    graphs = graphs if device.type == "cuda" else [False]
    model = random_i3d(0)
    env = machine(device)
    rows, skipped = [], {}
    for precision in precisions:
        for cuda_graphs in graphs:
            def runner_for(b, precision=precision, cuda_graphs=cuda_graphs):
                return WindowRunner(model, device, precision, cuda_graphs=cuda_graphs, batch_size=b)
            label = {"precision": precision, "cuda_graphs": cuda_graphs}
            for row in time_model(runner_for, batch_sizes, args.window, args.windows, args.repeats, device):
                rows.append({**label, **row})
                print(json.dumps(rows[-1]), flush=True)
            if args.video_frames:
                try:
                    video_rows = time_video(runner_for, batch_sizes, args.window, args.video_frames, args.repeats)
                except ImportError as exc:
                    skipped["video"] = f"needs av and cv2 ({exc})"
                    continue
                for row in video_rows:
                    rows.append({**label, **row})
                    print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "skipped": skipped, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
