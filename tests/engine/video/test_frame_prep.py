"""engine/video/preprocess.py and presets.py on synthetic arrays, against sizes, offsets and values
worked out by hand from the original's rule (resize the short side, centre crop 224 rounding
half to even, x/255*2-1)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

from engine.video.errors import VideoError  # noqa: E402
from engine.video.presets import PRESETS, check_frames, get_preset  # noqa: E402
from engine.video.preprocess import centre_crop, prepare_frame, resize_frame, to_network_input  # noqa: E402

CHARADES, ACTIVITYNET = PRESETS["charades"], PRESETS["activitynet"]


def frame(height: int, width: int, value: int = 77) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


@pytest.mark.parametrize("preset, size, resized", [
    (CHARADES, (100, 200), (226, 452)),   # short side 100 < 226: scale 2.26
    (CHARADES, (240, 113), (480, 226)),   # portrait: 113 → 226, scale 2
    (CHARADES, (225, 400), (226, 402)),   # one below: scale 226/225, 400 * 1.00444 = 401.8
    (CHARADES, (226, 400), (226, 400)),   # at the target: unchanged
    (CHARADES, (250, 300), (250, 300)),   # above: unchanged (Charades only grows frames)
    (ACTIVITYNET, (300, 400), (224, 299)),  # always resized: scale 224/300, 400 * 0.74667 = 298.7
    (ACTIVITYNET, (224, 400), (224, 400)),  # already 224: scale 1
    (ACTIVITYNET, (112, 150), (224, 300)),  # scale 2
])
def test_resize_brings_the_short_side_to_the_presets(preset, size, resized):
    out = resize_frame(frame(*size), preset)
    assert out.shape == (*resized, 3) and out.dtype == np.uint8
    assert (out == 77).all()  # bilinear on a flat frame stays flat


def test_a_frame_that_needs_no_resize_is_returned_as_is():
    rgb = frame(300, 300)
    assert resize_frame(rgb, CHARADES) is rgb
    assert resize_frame(rgb, dataclasses.replace(CHARADES, short_side=300)) is rgb
    assert resize_frame(rgb, dataclasses.replace(CHARADES, short_side=301)).shape == (301, 301, 3)


def positions(height: int, width: int) -> np.ndarray:
    """A frame whose pixel (y, x) holds y in channel 0 and x in channel 1 (as uint16)."""
    y, x = np.mgrid[:height, :width]
    return np.stack([y, x, np.zeros_like(y)], axis=-1).astype(np.uint16)


@pytest.mark.parametrize("height, width, top, left", [
    (224, 224, 0, 0), (229, 450, 2, 113),   # (229-224)/2 = 2.5 rounds to 2
    (227, 226, 2, 1),                        # 1.5 rounds to 2, 1.0 is 1
    (225, 231, 0, 4),                        # 0.5 rounds to 0, 3.5 to 4
    (300, 224, 38, 0),
])
def test_centre_crop_offsets_round_half_to_even(height, width, top, left):
    crop = centre_crop(positions(height, width))
    assert crop.shape == (224, 224, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (top, left)
    assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (top + 223, left + 223)


def test_centre_crop_of_another_size():
    crop = centre_crop(positions(10, 13), size=4)
    assert crop.shape == (4, 4, 3) and (crop[0, 0, 0], crop[0, 0, 1]) == (3, 4)  # 3.0, 4.5 → 4


@pytest.mark.parametrize("height, width", [(223, 300), (300, 223), (100, 100)])
def test_a_frame_smaller_than_the_crop_is_a_clear_error(height, width):
    with pytest.raises(VideoError) as info:
        centre_crop(frame(height, width))
    assert str(info.value) == f"frame of {width}x{height} after resizing is smaller than the 224x224 crop"


def test_prepare_frame_is_the_contiguous_centre_of_the_resized_frame():
    rgb = np.zeros((100, 150, 3), np.uint8)
    rgb[:, 75:] = 200  # right half bright
    out = prepare_frame(rgb, CHARADES)  # → 226 x 339, crop at (1, 58)
    assert out.shape == (224, 224, 3) and out.flags.c_contiguous and out.dtype == np.uint8
    bright = np.flatnonzero(out[112, :, 0] > 100)
    assert abs(bright[0] - (339 // 2 - 58)) <= 2 and bright[-1] == 223


def test_network_input_scales_each_value_and_moves_channels_first():
    crops = np.zeros((2, 5, 4, 6, 3), np.uint8)  # [videos, T, H, W, C]
    crops[1, 2, 3, 4] = (0, 51, 255)
    crops[0, 0, 0, 0] = (128, 1, 254)
    out = to_network_input(crops)
    assert out.shape == (2, 3, 5, 4, 6) and out.dtype == np.float32
    assert out[1, :, 2, 3, 4].tolist() == [-1.0, np.float32(-0.6), 1.0]  # 51/255*2-1 = -0.6
    assert out[0, :, 0, 0, 0].tolist() == [np.float32(1 / 255), np.float32(-253 / 255), np.float32(253 / 255)]
    assert (out[0, :, 1:] == -1).all()


def test_presets_by_name_and_frame_modes():
    assert get_preset("charades") is CHARADES and get_preset("tacos").window == 16
    with pytest.raises(VideoError) as info:
        get_preset("Charades")
    assert str(info.value) == "unknown preset 'Charades' (known: charades, activitynet, tacos)"
    assert check_frames("jpeg") == "jpeg" and check_frames("direct") == "direct"
    with pytest.raises(VideoError) as info:
        check_frames("png")
    assert str(info.value) == "unknown frames mode 'png' (known: jpeg, direct)"
