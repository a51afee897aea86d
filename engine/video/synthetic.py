"""Small generated videos (textured, coloured, moving) for tests, benchmarks and demos."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_pattern(index: int, width: int, height: int) -> np.ndarray:
    """An RGB uint8 frame with texture, colour, motion and noise, different for every index."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(index)
    frame = np.stack([(xx * 7 + index * 9) % 256, (yy * 5 + xx + index * 3) % 256,
                      128 + 100 * np.sin((xx + yy + 6 * index) / 7.0)], -1)
    return np.clip(frame + rng.normal(0, 10, frame.shape), 0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: int = 20, width: int = 64, height: int = 48, rate=30,
                codec: str = "libx264", pix_fmt: str = "yuv420p", rotation: int | None = None,
                pts: list[int] | None = None, time_base: Fraction | None = None,
                images: list[np.ndarray] | None = None) -> Path:
    """Writes `frames` frames of `moving_pattern` (or `images`, RGB or grey) to `path`; `pts` with
    `time_base` gives a variable frame rate, `rotation` a display matrix (degrees counter-clockwise)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = stream.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            image = images[i] if images is not None else moving_pattern(i, width, height)
            frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
