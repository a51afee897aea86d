"""I3D features of a collection of videos from a pool of Ray Data actors, each holding one
extractor: `RayExtractor.extract_many` yields what `FeatureExtractor.extract_many` yields (each
video's features, or the VideoError that stopped it), in input order."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import ray
import torch

from ..video.errors import VideoError
from ..video.extract import FeatureExtractor, make_extractor
from ..video.i3d import FEATURE_DIM
from .cluster import enter_folder, keep_order

VIDEOS_PER_CALL = 4  # videos an actor extracts per call (their windows share I3D forwards)


@dataclass(frozen=True)
class ExtractorSpec:
    """How each worker builds its extractor: `make_extractor`'s options, and the CPU threads of its share."""
    weights: str
    preset: str = "charades"
    frames: str = "jpeg"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 8
    threads: int | None = None

    def build(self) -> FeatureExtractor:
        """The extractor (torch limited to `threads`)."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return make_extractor(self.weights, self.preset, self.frames, self.device, self.precision, self.batch_size)


class ExtractVideos:
    """One actor of the pool: its extractor, built once; each call extracts a batch of videos and
    returns each one's features (float32 bytes, `clips` rows) or its error."""

    def __init__(self, make: Callable[[], FeatureExtractor], folder: str):
        enter_folder(folder)
        self.extractor = make()

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        done = {str(path): result for path, result in self.extractor.extract_many([r["path"] for r in rows])}
        results = [done[str(Path(r["path"]))] for r in rows]
        ok = [not isinstance(r, Exception) for r in results]
        return pa.table({
            "index": pa.array([r["index"] for r in rows], pa.int64()),
            "features": pa.array([r.tobytes() if good else None for r, good in zip(results, ok)], pa.binary()),
            "clips": pa.array([r.shape[0] if good else None for r, good in zip(results, ok)], pa.int64()),
            "error": pa.array([None if good else str(r) for r, good in zip(results, ok)], pa.string())})


class RayExtractor:
    """`extract_many` over `workers` actors of the Ray session of this process (each asking for
    `resources`, building its extractor with `make`)."""

    def __init__(self, make: Callable[[], FeatureExtractor], workers: int, resources: dict,
                 videos_per_call: int = VIDEOS_PER_CALL):
        self.make, self.workers, self.resources, self.videos_per_call = make, workers, resources, videos_per_call

    def extract_many(self, paths: Iterable[str | Path]) -> Iterator[tuple[Path, np.ndarray | VideoError]]:
        """(path, [T, 1024] float32 features or the VideoError that stopped it) for every video, in order."""
        paths = [Path(p) for p in paths]
        if not paths:
            return
        keep_order()
        dataset = ray.data.from_items([{"index": i, "path": str(p)} for i, p in enumerate(paths)]).map_batches(
            ExtractVideos, fn_constructor_args=(self.make, os.getcwd()), batch_size=self.videos_per_call,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=self.workers), **self.resources)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in table.to_pylist():
                path = paths[row["index"]]
                if row["error"] is not None:
                    yield path, VideoError(row["error"])
                else:
                    yield path, np.frombuffer(row["features"], np.float32).reshape(row["clips"], FEATURE_DIM).copy()
