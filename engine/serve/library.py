"""What the page can ground: the `.npy` features under the features root and the video files of the
videos folder, every name confined to its folder; a video's I3D features are extracted once, in the
background, one video at a time, with progress, and kept for its later queries."""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError

from ..prepare import feature_path
from ..video.files import VIDEO_SUFFIXES

log = logging.getLogger("seqpan.serve")
MAX_LISTED = 2000  # entries of each kind in a listing; more are cut (and the listing says so)
VIDEO_REFUSED = "video path refused: give the name of a video listed by GET /v1/videos"


class VideoRefused(SeqPANError):
    """A video name that is not a video file inside the videos folder: one message for every case."""

    def __init__(self) -> None:
        super().__init__(VIDEO_REFUSED)


def confined_files(root: str | Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[str, str]], bool]:
    """([(name relative to root with '/', real path)], cut?) of the files under `root` with one of
    `suffixes` that resolve (symlinks followed) to a file inside it, sorted by name, at most MAX_LISTED."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for file in files:
            if file.lower().endswith(suffixes):
                name = Path(os.path.relpath(os.path.join(folder, file), root)).as_posix()
                try:
                    found.append((name, feature_path(name, root, True)))
                except SeqPANError:
                    continue
    found.sort()
    return found[:MAX_LISTED], len(found) > MAX_LISTED


def feature_listing(root: str | Path | None, durations: dict[str, float]) -> tuple[list[dict], bool]:
    """The `.npy` files a request may name under `root`: {name, duration} (the duration from
    `durations` by the file's stem, else null: the client then gives one)."""
    if root is None:
        return [], False
    files, cut = confined_files(root, (".npy",))
    return [{"name": name, "duration": durations.get(Path(name).stem)} for name, _ in files], cut


@dataclass(eq=False)
class Extraction:
    """One video's features: `status` is pending, extracting, ready or failed; `progress` in [0, 1]."""
    name: str
    real: str
    status: str = "pending"
    frames: int = 0  # decoded so far
    expected: int = 0  # frames the extraction decodes (from the duration and the rate; 0: unknown)
    features: np.ndarray | None = None
    duration: float | None = None
    error: str | None = None
    finished: Future = field(default_factory=Future)  # done (with None) once ready or failed: await it

    @property
    def progress(self) -> float:
        if self.status == "ready":
            return 1.0
        return min(self.frames / self.expected, 0.99) if self.expected else 0.0

    def to_json(self) -> dict:
        out = {"status": self.status, "progress": round(self.progress, 4)}
        return {**out, "error": self.error} if self.error is not None else out


class VideoLibrary:
    """The video files of `folder`, named relative to it; `start(name)` extracts (once) with I3D
    weights `i3d` under `preset`, as `seqpan extract-features` does. The `max_videos` most recently
    extracted videos are kept (a file that changes is extracted again)."""

    def __init__(self, folder: str | Path, i3d: str | Path, preset: str = "charades", device: str = "auto",
                 max_videos: int = 32):
        self.folder, self.i3d, self.preset, self.device, self.max_videos = folder, i3d, preset, device, max_videos
        self.jobs: OrderedDict[tuple, Extraction] = OrderedDict()
        self.durations: dict[tuple, float | None] = {}
        self.lock = threading.Lock()
        self.todo: queue.SimpleQueue[Extraction] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        self.extractor = None  # made at the first extraction (loading I3D takes a while)

    def confine(self, name: object) -> str:
        """The real path of video `name` inside the folder; VideoRefused for anything else."""
        if not isinstance(name, str) or not name.lower().endswith(VIDEO_SUFFIXES):
            raise VideoRefused()
        try:
            return feature_path(name, self.folder, True)
        except SeqPANError:
            raise VideoRefused() from None

    def listing(self) -> tuple[list[dict], bool]:
        """Every video: {name, duration (null when the file is not a usable video), features: its extraction}."""
        files, cut = confined_files(self.folder, VIDEO_SUFFIXES)
        entries = []
        for name, real in files:
            try:
                key = _file_key(real)
            except VideoRefused:
                continue
            with self.lock:
                job = self.jobs.get(key)
            entries.append({"name": name, "duration": self._duration(key, real),
                            "features": job.to_json() if job is not None else {"status": "none", "progress": 0.0}})
        return entries, cut

    def start(self, name: object) -> Extraction:
        """The extraction of video `name`, queued if it was not already (VideoRefused if not a video here)."""
        real = self.confine(name)
        key = _file_key(real)
        with self.lock:
            job = self.jobs.get(key)
            if job is None:  # a failure is kept too: the same file fails again
                job = self.jobs[key] = Extraction(name, real)
                self.todo.put(job)
                self._evict()
                if self.worker is None:
                    self.worker = threading.Thread(target=self._work, name="seqpan-extract", daemon=True)
                    self.worker.start()
            self.jobs.move_to_end(key)
            return job

    def _duration(self, key: tuple, real: str) -> float | None:
        if key not in self.durations:
            from ..video.decode import probe

            try:
                self.durations[key] = probe(real).duration
            except SeqPANError:
                self.durations[key] = None
        return self.durations[key]

    def _evict(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.finished.done()]
        for key in finished[:max(0, len(self.jobs) - self.max_videos)]:
            del self.jobs[key]

    def _work(self) -> None:
        while True:
            self._extract(self.todo.get())

    def _extract(self, job: Extraction) -> None:
        from ..video.decode import probe
        from ..video.extract import make_extractor
        from ..video.presets import get_preset

        job.status = "extracting"
        try:
            info = probe(job.real)
            job.expected = int(info.duration * float(get_preset(self.preset).fps or info.rate))
            if self.extractor is None:
                self.extractor = make_extractor(self.i3d, self.preset, device=self.device)
            self.extractor.on_frame = lambda: setattr(job, "frames", job.frames + 1)
            job.features, job.duration, job.status = self.extractor.extract(job.real), info.duration, "ready"
        except Exception as err:  # a video that cannot be used: its error, naming it as the client did
            if not isinstance(err, (SeqPANError, OSError)):  # a bug: the log gets the traceback
                log.exception("extracting the features of %s failed", job.real)
            message = str(err) if isinstance(err, (SeqPANError, OSError)) else "feature extraction failed"
            job.error, job.status = message.replace(job.real, job.name), "failed"
        finally:
            job.finished.set_result(None)


def _file_key(real: str) -> tuple:
    """A file's identity for the caches: real path, size and modification time."""
    try:
        stat = os.stat(real)
    except OSError:  # gone since it was confined
        raise VideoRefused() from None
    return real, stat.st_size, stat.st_mtime_ns
