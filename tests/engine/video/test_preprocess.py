"""Preprocessing equals the original's steps, written here independently from VSLNet
prepare/extract_*.py and videotransforms.CenterCrop, on the same JPEG files."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

import cv2
import numpy as np

from engine.video.decode import decode_frames, probe
from engine.video.frames import video_crops
from engine.video.jpeg import CLI_CONVERTED, JpegRoundTrip, to_cli_yuvj420p
from engine.video.preprocess import to_network_input
from engine.video.presets import PRESETS

from .videos import write_video


def write_jpeg_files(video, preset, folder):
    """The `%6d.jpg` files of the original's ffmpeg step, as this package encodes them."""
    info = probe(video)
    encoder = JpegRoundTrip(preset.fps or info.rate, info.sample_aspect_ratio)
    frames = decode_frames(video, preset.fps, "yuvj420p", keep=CLI_CONVERTED)
    for i, frame in enumerate(frames, start=1):
        (folder / f"vid-{i:06d}.jpg").write_bytes(encoder.encode(to_cli_yuvj420p(frame)))
    return i


def original_charades(folder, num_frames):
    frames = []
    for i in range(1, num_frames + 1):
        img = cv2.imread(str(folder / "vid-{}.jpg".format(str(i).zfill(6))))[:, :, [2, 1, 0]]
        w, h, c = img.shape
        if w < 226 or h < 226:
            d = 226. - min(w, h)
            sc = 1 + d / min(w, h)
            img = cv2.resize(img, dsize=(0, 0), fx=sc, fy=sc)
        img = (img / 255.) * 2 - 1
        frames.append(img)
    return np.asarray(frames, dtype=np.float32)


def original_activitynet(folder, num_frames):
    frames = []
    for x in range(1, num_frames + 1):
        image = cv2.imread(str(folder / "vid-{}.jpg".format(str(x).zfill(6))))[:, :, [2, 1, 0]]
        width, height, channel = image.shape
        scale = 1 + (224.0 - min(width, height)) / min(width, height)
        image = cv2.resize(image, dsize=(0, 0), fx=scale, fy=scale)
        image = (image / 255.0) * 2 - 1
        frames.append(image)
    return np.asarray(frames, dtype=np.float32)


def original_centre_crop(imgs, size=224):
    t, h, w, c = imgs.shape
    i = int(np.round((h - size) / 2.))
    j = int(np.round((w - size) / 2.))
    return imgs[:, i:i + size, j:j + size, :]


@pytest.mark.parametrize("preset,width,height,codec", [
    ("charades", 64, 48, "libx264"),     # short side below 226: upscaled
    ("charades", 450, 229, "ffv1"),      # no resize; crop offset 2.5 rounds to 2
    ("activitynet", 320, 240, "mpeg4"),  # always resized, here down to a short side of 224
    ("tacos", 62, 90, "ffv1"),           # portrait, upscaled
])
def test_preprocessing_equals_the_originals_steps(tmp_path, preset, width, height, codec):
    video = write_video(tmp_path / "v.mkv", 6, width, height, rate=30, codec=codec)
    settings = PRESETS[preset]
    count = write_jpeg_files(video, settings, tmp_path)
    load = original_charades if preset == "charades" else original_activitynet
    expected = original_centre_crop(load(tmp_path, count))
    got = to_network_input(np.stack(list(video_crops(video, settings, "jpeg"))))
    assert got.dtype == np.float32 and got.shape == (3, count, 224, 224)
    assert np.array_equal(got, expected.transpose(3, 0, 1, 2))
