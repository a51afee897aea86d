"""Test videos: the package's generated ones, and lossless grey videos that carry their frame index."""
from __future__ import annotations

import av
import numpy as np

from engine.video.synthetic import write_video

__all__ = ["write_video", "index_video", "frame_index"]


def index_video(path, frames: int, rate, width: int = 32, height: int = 16):
    """A lossless grey video whose frame i has every luma sample equal to 5*i (read back by `frame_index`)."""
    images = [np.full((height, width), 5 * i, np.uint8) for i in range(frames)]
    return write_video(path, frames, width, height, rate, codec="ffv1", pix_fmt="gray", images=images)


def frame_index(frame: av.VideoFrame) -> int:
    """The index `index_video` wrote into a decoded grey frame."""
    plane = frame.planes[0]
    return int(np.frombuffer(plane, np.uint8)[plane.line_size * (plane.height // 2) + plane.width // 2]) // 5
