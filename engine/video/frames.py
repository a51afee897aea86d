"""A video file → the uint8 224x224 RGB crops the original fed to I3D, one per decoded frame."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .decode import decode_frames, probe
from .jpeg import CLI_CONVERTED, JpegRoundTrip, to_cli_yuvj420p
from .preprocess import prepare_frame
from .presets import Preset, check_frames


def decoded_rgb(path: str | Path, preset: Preset, frames: str = "jpeg") -> Iterator:
    """RGB uint8 frames at the preset's rate: `jpeg` through the original's JPEG files (encoded
    as the ffmpeg CLI did, read back by OpenCV), `direct` straight from the decoder."""
    check_frames(frames)
    info = probe(path)
    rate = preset.fps or info.rate
    if frames == "direct":
        for frame in decode_frames(path, rate, "rgb24"):
            yield frame.to_ndarray()
    else:
        round_trip = JpegRoundTrip(rate, info.sample_aspect_ratio)
        for frame in decode_frames(path, rate, "yuvj420p", keep=CLI_CONVERTED):
            yield round_trip(to_cli_yuvj420p(frame))


def video_crops(path: str | Path, preset: Preset, frames: str = "jpeg") -> Iterator:
    """The preprocessed uint8 [224, 224, 3] crop of every frame, in order."""
    for rgb in decoded_rgb(path, preset, frames):
        yield prepare_frame(rgb, preset)
