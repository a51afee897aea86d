"""Test videos: the package's generated ones, and lossless grey videos that carry their frame index."""
from __future__ import annotations

import av
import numpy as np

from engine.video.synthetic import write_video

__all__ = ["write_video", "index_video", "frame_index", "failing_video"]


def index_video(path, frames: int, rate, width: int = 32, height: int = 16):
    """A lossless grey video whose frame i has every luma sample equal to 5*i (read back by `frame_index`)."""
    images = [np.full((height, width), 5 * i, np.uint8) for i in range(frames)]
    return write_video(path, frames, width, height, rate, codec="ffv1", pix_fmt="gray", images=images)


def frame_index(frame: av.VideoFrame) -> int:
    """The index `index_video` wrote into a decoded grey frame."""
    plane = frame.planes[0]
    return int(np.frombuffer(plane, np.uint8)[plane.line_size * (plane.height // 2) + plane.width // 2]) // 5


def failing_video(path, frames: int, rate=24, at: float = 0.75):
    """An MJPEG video whose data is garbage from `at` of the file on for 2,000 bytes: its first frames
    decode, then the decoder fails (PyAV raises InvalidDataError)."""
    path = write_video(path, frames, 64, 48, rate, codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
