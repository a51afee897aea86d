"""Video files as a GroundingEngine's feature source: I3D features and duration of each file,
extracted once and kept for the next queries on the same file."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .decode import probe
from .extract import FeatureExtractor


class VideoFeatureSource:
    """`source(path)` → ([T, 1024] float32 features, duration in seconds). The `max_videos` most
    recently used files are cached, keyed by real path, size and modification time (a file that
    changes is extracted again); extraction runs one video at a time."""

    def __init__(self, extractor: FeatureExtractor, max_videos: int = 32):
        self.extractor, self.max_videos = extractor, max_videos
        self.cache: OrderedDict[tuple, tuple[np.ndarray, float]] = OrderedDict()
        self.lock = threading.Lock()
        self.extractions = 0

    def __call__(self, path: str | Path) -> tuple[np.ndarray, float]:
        path = Path(path)
        try:
            stat = path.stat()
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = None  # let probe() name the problem
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
            duration = probe(path).duration
            entry = (self.extractor.extract(path), duration)
            self.extractions += 1
            if key is not None:
                self.cache[key] = entry
                while len(self.cache) > self.max_videos:
                    self.cache.popitem(last=False)
            return entry
