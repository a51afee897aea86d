"""I3D features of video files as the original made them, with windows batched: windows of the
same length — of one video and of the next ones — share a forward, and each window's features
equal those of running it alone, as the original did."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..devices import openvino_imports, resolve_device, resolve_precision
from .errors import VideoError
from .frames import video_crops
from .i3d import FEATURE_DIM, InceptionI3d
from .prefetch import Prefetch
from .presets import RUNTIMES, Preset, check_frames, get_preset
from .eager_i3d import WindowRunner
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
    `frames` is `jpeg` (the original's JPEG round trip) or `direct` (decoded frames as they are).
    A producer thread decodes and preprocesses up to `buffer` windows ahead while `runner` works."""

    def __init__(self, runner: WindowRunner, preset: Preset, frames: str = "jpeg", batch_size: int = 8,
                 buffer: int | None = None):
        self.runner, self.preset, self.frames, self.batch_size = runner, preset, check_frames(frames), batch_size
        self.buffer = buffer or 2 * batch_size
        self.queues: dict[int, list] = {}  # window length → [(video, window index, uint8 crops)]
        self.on_frame: Callable[[], None] | None = None  # called after each decoded frame (progress), by the producer

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
        with Prefetch(self._windows(paths), self.buffer) as events:
            for video, event in events:
                if video not in videos:
                    videos.append(video)
                if isinstance(event, np.ndarray):
                    self._queue(video, event)
                elif isinstance(event, VideoError):
                    video.error, video.decoded = event, True
                    self._drop(video)
                else:
                    video.decoded = True
                self._run(full_only=True)
                yield from self._collect(videos)
        self._run(full_only=False)
        yield from self._collect(videos)

    def _windows(self, paths: Iterable[str | Path]) -> Iterator[tuple[_Video, np.ndarray | VideoError | None]]:
        """(video, event) for every video in turn (the producer's work): each window's uint8 crops as
        its frames are decoded, then None when the video is done, or the VideoError that stopped it."""
        for path in paths:
            video = _Video(Path(path))
            try:
                for window in self._decode(video.path):
                    yield video, window
                yield video, None
            except VideoError as exc:
                yield video, exc

    def _decode(self, path: Path) -> Iterator[np.ndarray]:
        """The video's windows, stacked, in the original's order, as its frames are decoded."""
        stream = WindowStream(self.preset.window, self.preset.chunk_frames)
        crops: list[np.ndarray] = []
        first = 0  # frame index of crops[0]
        for crop in video_crops(path, self.preset, self.frames):
            if self.on_frame is not None:
                self.on_frame()
            crops.append(crop)
            for start, end in stream.push():
                yield _window(path, crops[start - first:end - first])
            drop = stream.keep_from - first
            if drop > 0:
                del crops[:drop]
                first += drop
        if stream.count == 0:
            raise VideoError(f"video {path}: no frames")
        for start, end in stream.finish():
            yield _window(path, crops[start - first:end - first])

    def _queue(self, video: _Video, window: np.ndarray) -> None:
        video.features.append(None)
        video.pending += 1
        self.queues.setdefault(len(window), []).append((video, len(video.features) - 1, window))

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


def _window(path: Path, crops: list[np.ndarray]) -> np.ndarray:
    """One window's crops stacked, or a VideoError when it is too short for I3D."""
    if len(crops) < MIN_WINDOW:
        raise VideoError(f"video {path}: too short for I3D — a window of {len(crops)} frames at "
                         f"this preset's rate; the original's rule needs at least {MIN_WINDOW + 1} frames")
    return np.stack(crops)


def make_runner(model: InceptionI3d, device: str = "auto", precision: str = "auto", runtime: str = "auto",
                batch_size: int = 8, cuda_graphs: bool = False, cache_dir: str | Path | None = None):
    """The window runner for option names as the CLI takes them: on the CPU, I3D compiled by OpenVINO
    (fp32 unless told bf16) when it imports, else eager torch; on a GPU, eager torch (bf16 by default)."""
    if runtime not in RUNTIMES:
        raise VideoError(f"unknown I3D runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    resolved = resolve_device(device)
    precision = resolve_precision(precision, resolved)
    if runtime == "openvino" and resolved.type != "cpu":
        raise VideoError(f"the openvino I3D runtime runs on the CPU, not {resolved}")
    if resolved.type == "cpu" and (runtime == "openvino" or (runtime == "auto" and openvino_imports())):
        from .compiled_i3d import CompiledWindowRunner  # imports OpenVINO

        return CompiledWindowRunner(model, precision, cache_dir=cache_dir)
    return WindowRunner(model, resolved, precision, cuda_graphs=cuda_graphs, batch_size=batch_size)


def make_extractor(weights: str | Path, preset: str = "charades", frames: str = "jpeg", device: str = "auto",
                   precision: str = "auto", batch_size: int = 8, cuda_graphs: bool = False,
                   runtime: str = "auto") -> FeatureExtractor:
    """A FeatureExtractor from a piergiaj I3D weights file and option names as the CLI takes them
    (see make_runner); `auto` devices pick a CUDA GPU when there is one."""
    settings = get_preset(preset)
    runner = make_runner(load_i3d(weights), device, precision, runtime, batch_size, cuda_graphs)
    return FeatureExtractor(runner, settings, frames, batch_size)
