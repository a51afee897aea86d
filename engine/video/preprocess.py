"""The original's per-frame preprocessing: cv2 bilinear resize by the preset's rule, centre crop
224, and x/255*2-1 — on uint8 RGB frames, with the float step done last (it is per pixel, so it
commutes with the crop)."""
from __future__ import annotations

import cv2
import numpy as np

from .errors import VideoError
from .presets import CROP, Preset
from .scale import UNIT_RANGE


def resize_frame(rgb: np.ndarray, preset: Preset) -> np.ndarray:
    """cv2.resize(fx = fy = 1 + (target - short)/short), as the original: always (ActivityNet,
    TACoS) or only when the short side is below the target (Charades)."""
    short = min(rgb.shape[0], rgb.shape[1])
    if not preset.always_resize and short >= preset.short_side:
        return rgb
    scale = 1 + (preset.short_side - short) / short
    return cv2.resize(rgb, dsize=None, fx=scale, fy=scale)  # the size from fx and fy


def centre_crop(frame: np.ndarray, size: int = CROP) -> np.ndarray:
    """The size x size centre, offsets rounded with numpy's round-half-to-even as the original."""
    height, width = frame.shape[:2]
    if height < size or width < size:
        raise VideoError(f"frame of {width}x{height} after resizing is smaller than the {size}x{size} crop")
    top, left = int(np.round((height - size) / 2.0)), int(np.round((width - size) / 2.0))
    return frame[top:top + size, left:left + size]


def prepare_frame(rgb: np.ndarray, preset: Preset) -> np.ndarray:
    """One decoded RGB uint8 frame → the uint8 224x224x3 crop the original fed to I3D."""
    return np.ascontiguousarray(centre_crop(resize_frame(rgb, preset)))


def to_network_input(crops: np.ndarray) -> np.ndarray:
    """[..., T, 224, 224, 3] uint8 crops → [..., 3, T, 224, 224] float32 in [-1, 1]."""
    values = UNIT_RANGE[crops]
    return np.moveaxis(values, -1, -4)
