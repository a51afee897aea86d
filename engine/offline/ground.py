"""A requests file grounded by a pool of Ray Data actors, each holding one GroundingEngine: the
file is cut into chunks (`sources`), each actor reads its chunks and grounds them as the
single-process command does, and the result lines come back in input order."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ray
from ..devices import engine_threads
from ..engine import GroundingEngine, resolve_device
from ..request_lines import ground_entries
from ..wire import dumps_result
from .cluster import enter_folder, keep_order
from .sources import ChunkReader, plan_chunks


@dataclass(frozen=True)
class EngineSpec:
    """How each worker builds its engine: the options of `seqpan ground`, and the CPU threads of its share."""
    checkpoint: str
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    max_batch: int = 256
    i3d: str | None = None  # video requests: I3D weights to extract features with
    preset: str = "charades"
    threads: int | None = None

    def build(self) -> GroundingEngine:
        """The engine (with a video source when `i3d` is given)."""
        options = engine_threads(self.threads, self.backend, resolve_device(self.device))
        source = None
        if self.i3d is not None:
            from ..video.extract import make_extractor
            from ..video.source import VideoFeatureSource

            source = VideoFeatureSource(make_extractor(self.i3d, self.preset, device=self.device))
        return GroundingEngine.from_checkpoint(self.checkpoint, device=self.device, precision=self.precision,
                                               backend=self.backend, max_batch=self.max_batch, video_source=source,
                                               backend_options=options)


class GroundChunks:
    """One actor of the pool: its engine, built once; each call grounds a batch of chunks and
    returns, for each of their lines or rows, its result as a line of strict JSON (`line`; null for
    a blank line) and whether it failed (`failed`)."""

    def __init__(self, make_engine: Callable[[], GroundingEngine], top_k: int | None, nms: float | None,
                 folder: str):
        enter_folder(folder)
        self.engine, self.top_k, self.nms = make_engine(), top_k, nms
        self.reader = ChunkReader()

    def __call__(self, chunks):
        import pyarrow as pa

        entries = [e for chunk in chunks.to_pylist() for e in self.reader.entries(chunk)]
        served = iter(ground_entries(self.engine, [e for e in entries if e is not None], self.top_k, self.nms))
        results = [None if e is None else next(served) for e in entries]
        return pa.table({"line": pa.array([None if r is None else dumps_result(r) for r in results], pa.string()),
                         "failed": pa.array([r is not None and r.error is not None for r in results], pa.bool_())})


def ground_requests(requests: str | Path, make_engine: Callable[[], GroundingEngine], workers: int,
                    batch_size: int, resources: dict, top_k: int | None = None,
                    nms: float | None = None) -> tuple[int, Iterator]:
    """Ground a requests file (JSONL, or `.parquet`) on the Ray session of this process with
    `workers` actors (each asking for `resources`, building its engine with `make_engine`), in
    chunks of `batch_size` lines or rows. Returns the number of lines or rows, and an iterator of
    pyarrow tables (`line`, `failed`: `GroundChunks`) with one row per line or row, in input order."""
    chunks = plan_chunks(requests, batch_size)
    if not chunks:
        return 0, iter(())
    keep_order()
    dataset = ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks))).map_batches(
        GroundChunks, fn_constructor_args=(make_engine, top_k, nms, os.getcwd()), batch_size=1,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers), **resources)
    return sum(chunk["rows"] for chunk in chunks), dataset.iter_batches(batch_size=None, batch_format="pyarrow")
