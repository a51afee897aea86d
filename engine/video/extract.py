"""I3D features of video files as the original made them, with windows batched: windows of the
same length — of one video and of the next ones — share a forward, and each window's features
equal those of running it alone, as the original did."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import resolve_device
from .errors import VideoError
from .frames import video_crops
from .i3d import FEATURE_DIM
from .presets import FRAME_MODES, Preset, get_preset
from .runner import WindowRunner
from .weights import load_i3d
from .windows import WindowStream

MIN_WINDOW = 9  # I3D's temporal strides (8) and its 2-step average pool need 9 frames


@dataclass(eq=False)
class _Video:
    path: Path
    features: list = field(default_factory=list)  # per window, in order; None until computed
    pending: int = 0
    decoded: bool = False
    error: VideoError | None = None

    @property
    def complete(self) -> bool:
        return self.decoded and (self.error is not None or self.pending == 0)


class FeatureExtractor:
    """Extracts [T, 1024] float32 features of videos with `runner` (a WindowRunner) under `preset`;
    `frames` is `jpeg` (the original's JPEG round trip) or `direct` (decoded frames as they are)."""

    def __init__(self, runner: WindowRunner, preset: Preset, frames: str = "jpeg", batch_size: int = 8):
        if frames not in FRAME_MODES:
            raise VideoError(f"unknown frames mode {frames!r} (known: {', '.join(FRAME_MODES)})")
        self.runner, self.preset, self.frames, self.batch_size = runner, preset, frames, batch_size
        self.queues: dict[int, list] = {}  # window length → [(video, window index, uint8 crops)]
        self.on_frame: Callable[[], None] | None = None  # called after each decoded frame (progress)

    def extract(self, path: str | Path) -> np.ndarray:
        """Features of one video; a VideoError when it cannot be used."""
        (_, result), = self.extract_many([path])
        if isinstance(result, VideoError):
            raise result
        return result

    def extract_many(self, paths: Iterable[str | Path]) -> Iterator[tuple[Path, np.ndarray | VideoError]]:
        """(path, features or the VideoError that stopped it) for every video, as each completes."""
        self.queues = {}  # whatever an interrupted earlier call left
        videos: list[_Video] = []
        for path in paths:
            video = _Video(Path(path))
            videos.append(video)
            try:
                for _ in self._decode(video):
                    self._run(full_only=True)
                    yield from self._collect(videos)
            except VideoError as exc:
                video.error = exc
                self._drop(video)
            video.decoded = True
            self._run(full_only=True)
            yield from self._collect(videos)
        self._run(full_only=False)
        yield from self._collect(videos)

    def _decode(self, video: _Video) -> Iterator[None]:
        """Queues the video's windows as its frames are decoded; yields after each queued window."""
        stream = WindowStream(self.preset.window, self.preset.chunk_frames)
        crops: list[np.ndarray] = []
        first = 0  # frame index of crops[0]
        for crop in video_crops(video.path, self.preset, self.frames):
            if self.on_frame is not None:
                self.on_frame()
            crops.append(crop)
            for start, end in stream.push():
                self._queue(video, crops[start - first:end - first])
                yield
            drop = stream.keep_from - first
            if drop > 0:
                del crops[:drop]
                first += drop
        if stream.count == 0:
            raise VideoError(f"video {video.path}: no frames")
        for start, end in stream.finish():
            self._queue(video, crops[start - first:end - first])
            yield

    def _queue(self, video: _Video, window: list[np.ndarray]) -> None:
        if len(window) < MIN_WINDOW:
            raise VideoError(f"video {video.path}: too short for I3D — a window of {len(window)} frames at "
                             f"this preset's rate; the original's rule needs at least {MIN_WINDOW + 1} frames")
        video.features.append(None)
        video.pending += 1
        self.queues.setdefault(len(window), []).append((video, len(video.features) - 1, np.stack(window)))

    def _drop(self, video: _Video) -> None:
        for length, queue in self.queues.items():
            self.queues[length] = [item for item in queue if item[0] is not video]

    def _run(self, full_only: bool) -> None:
        """Runs every full batch of a window length (and, unless `full_only`, the partial ones)."""
        for queue in self.queues.values():
            while len(queue) >= self.batch_size or (queue and not full_only):
                batch, queue[:] = queue[:self.batch_size], queue[self.batch_size:]
                outputs = self.runner(np.stack([crops for _, _, crops in batch]))
                for (video, index, _), output in zip(batch, outputs):
                    video.features[index] = output
                    video.pending -= 1

    @staticmethod
    def _collect(videos: list[_Video]) -> Iterator[tuple[Path, np.ndarray | VideoError]]:
        for video in [v for v in videos if v.complete]:
            videos.remove(video)
            if video.error is not None:
                yield video.path, video.error
            else:
                yield video.path, np.concatenate(video.features).reshape(-1, FEATURE_DIM).astype(np.float32)


def make_extractor(weights: str | Path, preset: str = "charades", frames: str = "jpeg", device: str = "auto",
                   precision: str = "auto", batch_size: int = 8, cuda_graphs: bool = False) -> FeatureExtractor:
    """A FeatureExtractor from a piergiaj I3D weights file and option names as the CLI takes them;
    `auto` picks a CUDA GPU when there is one, and bf16 there (fp32 on the CPU)."""
    settings = get_preset(preset)
    model = load_i3d(weights)
    resolved = resolve_device(device)
    if precision == "auto":
        precision = "bf16" if resolved.type == "cuda" else "fp32"
    runner = WindowRunner(model, resolved, precision, cuda_graphs=cuda_graphs, batch_size=batch_size)
    return FeatureExtractor(runner, settings, frames, batch_size)
