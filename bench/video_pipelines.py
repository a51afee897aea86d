"""Video → I3D features, whole pipelines side by side on the CPU (run by `python -m bench.video_timing
--side-by-side`): the original preparation and the engine's runtimes, each timed in its own block."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.video.extract import FeatureExtractor, make_runner
from engine.video.frames import video_crops
from engine.video.presets import PRESETS
from engine.video.synthetic import write_video
from engine.video.weights import random_i3d
from engine.video.windows import plan_windows

PIPELINES = ("original", "eager", "openvino-fp32", "openvino-bf16")
RUNTIMES = {"eager": ("eager", "fp32"), "openvino-fp32": ("openvino", "fp32"), "openvino-bf16": ("openvino", "bf16")}
PRESET = PRESETS["charades"]
BATCH = 8  # windows per forward, the CLI's default
QUERIES = 500  # Charades-STA test queries grounded on each video for the bf16 answers check


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the original: ffmpeg CLI → JPEG files → OpenCV → eager I3D, window by window -----------------------
def original_frames(folder: Path, start: int, end: int) -> np.ndarray:
    """The original's `load_frames`: JPEG files start..end-1 read by OpenCV as RGB, resized by the
    preset's rule, scaled to [-1, 1] (float64, stored float32), centre-cropped to 224."""
    frames = []
    for index in range(start, end):
        image = cv2.imread(str(folder / f"{index + 1:06d}.jpg"))[:, :, [2, 1, 0]]
        short = min(image.shape[:2])
        if PRESET.always_resize or short < PRESET.short_side:
            scale = 1 + (PRESET.short_side - short) / short
            image = cv2.resize(image, dsize=(0, 0), fx=scale, fy=scale)
        frames.append((image / 255.0) * 2 - 1)
    frames = np.asarray(frames, dtype=np.float32)
    top, left = int(np.round((frames.shape[1] - 224) / 2.0)), int(np.round((frames.shape[2] - 224) / 2.0))
    return frames[:, top:top + 224, left:left + 224]


def original(path: Path, model) -> tuple[np.ndarray, float, float, int]:
    """(features, end-to-end seconds, network seconds, frames) of the original's preparation."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-filter:v",
                        f"fps=fps={PRESET.fps}", f"{folder}/%06d.jpg"], check=True)
        count = len(os.listdir(folder))
        features, network = [], 0.0
        for a, b in plan_windows(count, PRESET.window, PRESET.chunk_frames):
            x = torch.from_numpy(original_frames(Path(folder), a, b)).permute(3, 0, 1, 2)[None]
            tick = time.perf_counter()
            with torch.no_grad():
                features.append(model.features(x)[0].numpy())
            network += time.perf_counter() - tick
        return np.concatenate(features), time.perf_counter() - start, network, count


# -- the engine ---------------------------------------------------------------------------------------
def windows_of(path: Path) -> tuple[list[np.ndarray], int]:
    """The video's uint8 windows in the original's order, as the engine's producer makes them, and
    its frame count."""
    crops = list(video_crops(path, PRESET))
    windows = plan_windows(len(crops), PRESET.window, PRESET.chunk_frames)
    return [np.stack(crops[a:b]) for a, b in windows], len(crops)


def batch_shapes(windows: list[np.ndarray]) -> list[tuple[int, int]]:
    return sorted({(len(windows[i:i + BATCH]), len(windows[i])) for i in range(0, len(windows), BATCH)})


def engine(path: Path, model, name: str, windows: list[np.ndarray], cache_dir: Path) -> dict:
    """End-to-end and network-only seconds of the engine with one runtime; its compiled shapes made
    (or loaded) beforehand, as a second video of a run finds them."""
    runtime, precision = RUNTIMES[name]
    runner = make_runner(model, "cpu", precision, runtime, BATCH, cache_dir=cache_dir)
    if runtime == "openvino":
        for shape in batch_shapes(windows):
            runner.request(shape)
    else:
        runner(windows[0][None])  # eager: one forward first (allocator, oneDNN primitives)
    extractor = FeatureExtractor(runner, PRESET, "jpeg", BATCH)
    start = time.perf_counter()
    features = extractor.extract(path)
    end_to_end = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(windows), BATCH):
        runner(np.stack(windows[i:i + BATCH]))
    return {"features": features, "end_to_end_s": end_to_end, "network_s": time.perf_counter() - start}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


# -- startup, in a fresh process ------------------------------------------------------------------------
STARTUP = """
import json, sys, time
start = time.perf_counter()
from engine.video.extract import make_runner
from engine.video.weights import load_i3d
imported = time.perf_counter()
model = load_i3d(sys.argv[1])
loaded = time.perf_counter()
runner = make_runner(model, "cpu", sys.argv[3], "openvino", 8, cache_dir=sys.argv[2])
for shape in json.loads(sys.argv[4]):
    runner.request(tuple(shape))
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "weights_s": loaded - imported, "compile_or_load_s": done - loaded,
                  "status": sorted(set(runner.status.values()))}))
"""


def startup(weights: Path, precision: str, cache_dir: Path, shapes: list[tuple[int, int]]) -> dict:
    proc = subprocess.run([sys.executable, "-c", STARTUP, str(weights), str(cache_dir), precision, json.dumps(shapes)],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the bf16 answers check -----------------------------------------------------------------------------
def answers_changed(f32: dict[str, np.ndarray], bf16: dict[str, np.ndarray], durations: dict[str, float]) -> dict:
    """Of QUERIES Charades-STA test queries grounded on each video with a random-weight Charades-preset
    SeqPAN (the reference backend), how many get other clip indices from the bf16 features."""
    from bench.workloads import load_workload, random_model
    from engine import GroundingEngine, GroundingRequest

    workload = load_workload("charades")
    engine = GroundingEngine(random_model(workload), *workload.vocab(), device="cpu", backend="reference")
    records = workload.take(QUERIES)
    same = total = 0
    for video in f32:
        answers = [[(r.start_index, r.end_index) for r in engine.ground(
            [GroundingRequest(features[video], q.sentence, durations[video]) for q in records])]
            for features in (f32, bf16)]
        same += sum(a == b for a, b in zip(*answers))
        total += len(records)
    return {"queries": total, "same_clip_indices": same, "share_same": same / total,
            "model": "random-weight Charades-preset SeqPAN (bench.workloads), reference backend"}


def side_by_side(pipelines: list[str] | None, seconds: list[int], repeats: int = 1, codec: str = "libx264") -> dict:
    """Every pipeline on every video length, each (pipeline, video) its own block; repeats take the median."""
    pipelines = pipelines or list(PIPELINES)
    if "original" in pipelines and shutil.which("ffmpeg") is None:
        raise SystemExit("the original pipeline needs the ffmpeg program (apt-get install ffmpeg)")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = random_i3d(0, num_classes=157)
    rows, features, durations = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "rgb_charades.pt"
        torch.save(model.state_dict(), weights)
        videos = {s: write_video(tmp / f"{s}s.mp4", 30 * s, 320, 240, rate=30, codec=codec) for s in seconds}
        windows, counts = {}, {}
        for s, path in videos.items():
            windows[s], counts[s] = windows_of(path)
        for s in seconds:
            durations[f"{s}s"] = float(s)
            for name in pipelines:
                before, runs = load(), []
                for _ in range(repeats):
                    if name == "original":
                        feats, total, network, count = original(videos[s], model)
                        runs.append({"features": feats, "end_to_end_s": total, "network_s": network})
                    else:
                        runs.append(engine(videos[s], model, name, windows[s], tmp / "cache"))
                frames = counts[s]
                median = sorted(runs, key=lambda r: r["end_to_end_s"])[len(runs) // 2]
                features[(name, s)] = median["features"]
                row = {"pipeline": name, "video_s": s, "frames": frames, "repeats": repeats,
                       "end_to_end_s": [r["end_to_end_s"] for r in runs], "network_s": [r["network_s"] for r in runs],
                       "end_to_end_fps": frames / median["end_to_end_s"], "network_fps": frames / median["network_s"],
                       "load_before": before, "load_after": load()}
                rows.append(row)
                print(json.dumps(row), flush=True)
        for row in rows:
            own = features[(row["pipeline"], row["video_s"])]
            if ("eager", row["video_s"]) in features:
                row["features_rel_err_vs_eager"] = relative_error(own, features[("eager", row["video_s"])])
            reference = features.get(("original", row["video_s"]))
            if reference is not None:
                row["features_rel_err_vs_original"] = relative_error(own, reference)
                original_fps = next(r["end_to_end_fps"] for r in rows
                                    if r["pipeline"] == "original" and r["video_s"] == row["video_s"])
                row["end_to_end_x_original"] = row["end_to_end_fps"] / original_fps
        result = {"rows": rows, "startup": {}, "video": f"generated 320x240, 30 fps, {codec} (engine.video.synthetic); "
                  "Charades preset (24 fps, 24-frame windows); He-scaled random I3D weights (157 classes)",
                  "batch": BATCH}
        shapes = sorted({shape for w in windows.values() for shape in batch_shapes(w)})
        for name in pipelines:
            if name.startswith("openvino"):
                cache = tmp / f"startup-{name}"
                precision = RUNTIMES[name][1]
                result["startup"][name] = {"shapes": shapes, "load": load(),
                                           "cold_cache": startup(weights, precision, cache, shapes),
                                           "warm_cache": startup(weights, precision, cache, shapes)}
                print(json.dumps({name: result["startup"][name]}), flush=True)
        if "openvino-fp32" in pipelines and "openvino-bf16" in pipelines:
            result["bf16_answers"] = answers_changed({f"{s}s": features[("openvino-fp32", s)] for s in seconds},
                                                     {f"{s}s": features[("openvino-bf16", s)] for s in seconds},
                                                     durations)
            print(json.dumps(result["bf16_answers"]), flush=True)
    return result
