"""The decoded frames equal what the original's command line produced: `ffmpeg -i V [-filter:v
fps=fps=24] DIR/%6d.jpg` read back with cv2.imread. Needs the ffmpeg program (measured with
Debian's ffmpeg 5.1); skipped without it. H.264 and MJPEG decoding are bit-exact across ffmpeg
versions; MPEG-4 part 2 is not (its IDCT may differ by one between builds, measured between 5.1
and PyAV's libavcodec 62), so it is not compared here."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

import shutil
import subprocess

import cv2
import numpy as np

from engine.video.frames import decoded_rgb
from engine.video.presets import PRESETS

from .videos import write_video

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command-line program")


def cli_frames(video, preset, folder):
    rate = ["-filter:v", "fps=fps=24"] if preset.fps else []
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "panic", "-i", str(video), *rate,
                    str(folder / "vid-%6d.jpg")], check=True)
    return [cv2.imread(str(path))[:, :, [2, 1, 0]] for path in sorted(folder.glob("vid-*.jpg"))]


@pytest.mark.parametrize("preset,kwargs", [
    ("charades", dict(frames=40, width=320, height=240, rate=30)),
    ("charades", dict(frames=30, width=96, height=64, rate=25, rotation=90)),
    ("activitynet", dict(frames=60, width=160, height=120, rate=30)),
    ("tacos", dict(frames=20, width=96, height=64, rate=25, pix_fmt="yuvj420p", codec="mjpeg")),
])
def test_jpeg_frames_equal_the_ffmpeg_cli(tmp_path, preset, kwargs):
    video = write_video(tmp_path / "v.mp4", **kwargs)
    (tmp_path / "cli").mkdir()
    expected = cli_frames(video, PRESETS[preset], tmp_path / "cli")
    got = list(decoded_rgb(video, PRESETS[preset], "jpeg"))
    assert len(got) == len(expected) > 0
    assert [int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, expected)] == [0] * len(got)


def test_variable_frame_rate_count_equals_the_ffmpeg_cli(tmp_path):
    from fractions import Fraction
    pts = np.cumsum([0] + [20, 33, 50, 90] * 10)[:40].tolist()
    video = write_video(tmp_path / "vfr.mp4", 40, pts=pts, time_base=Fraction(1, 1000))
    (tmp_path / "cli").mkdir()
    expected = cli_frames(video, PRESETS["activitynet"], tmp_path / "cli")
    assert len(list(decoded_rgb(video, PRESETS["activitynet"], "jpeg"))) == len(expected)
