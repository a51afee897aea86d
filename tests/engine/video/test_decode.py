"""Decoding: frame selection at a fixed rate, the native rate, rotation, odd inputs, bad inputs."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

import math
from fractions import Fraction

import av
import numpy as np

from engine.video.decode import decode_frames, probe
from engine.video.errors import VideoError
from engine.video.frames import decoded_rgb
from engine.video.presets import PRESETS

from .videos import frame_index, index_video, write_video

GREY = frozenset({"gray"})


def fps_filter_selection(n, rate, out_rate):
    """ffmpeg's fps filter (round=near): input frame i lands in output slot round(i*out/in); each
    slot shows the last frame that landed at or before it; the output lasts round(n*out/in) slots."""
    ratio = Fraction(out_rate) / Fraction(rate)
    slots = [math.floor(i * ratio + Fraction(1, 2)) for i in range(n)]
    return [max(i for i in range(n) if slots[i] <= k) for k in range(math.floor(n * ratio + Fraction(1, 2)))]


@pytest.mark.parametrize("n,rate", [(50, 30), (30, 25), (20, 12), (45, Fraction(30000, 1001)), (10, 60)])
def test_charades_rate_selects_frames_as_the_fps_filter(tmp_path, n, rate):
    path = index_video(tmp_path / "v.mkv", n, rate)
    got = [frame_index(f) for f in decode_frames(path, Fraction(24), "gray", keep=GREY)]
    assert got == fps_filter_selection(n, rate, 24)


@pytest.mark.parametrize("suffix,rate", [(".mkv", 25), (".mkv", Fraction(30000, 1001)), (".avi", 30)])
def test_native_rate_keeps_every_frame_of_a_constant_rate_video(tmp_path, suffix, rate):
    path = index_video(tmp_path / f"v{suffix}", 23, rate)
    assert [frame_index(f) for f in decode_frames(path, None, "gray", keep=GREY)] == list(range(23))


def test_variable_frame_rate_becomes_constant(tmp_path):
    # frames at irregular times (ms): the native-rate output is evenly spaced at the stream's rate
    pts = np.cumsum([0] + [20, 33, 50, 90] * 10)[:40].tolist()
    path = write_video(tmp_path / "vfr.mp4", 40, pts=pts, time_base=Fraction(1, 1000))
    info = probe(path)
    frames = list(decode_frames(path, None, "rgb24"))
    assert abs(len(frames) - info.duration * info.rate) <= 2
    times = [f.time for f in frames]
    assert np.allclose(np.diff(times), 1 / float(info.rate), atol=1e-6)


@pytest.mark.parametrize("rotation,turns", [(90, 1), (-90, -1), (180, 2)])
def test_rotated_video_is_decoded_upright(tmp_path, rotation, turns):
    plain = write_video(tmp_path / "plain.mp4", 3, 64, 48, codec="libx264", pix_fmt="yuv444p")
    turned = write_video(tmp_path / "turned.mp4", 3, 64, 48, codec="libx264", pix_fmt="yuv444p", rotation=rotation)
    upright = [np.rot90(f.to_ndarray(), turns) for f in decode_frames(plain, None, "rgb24")]
    shown = [f.to_ndarray() for f in decode_frames(turned, None, "rgb24")]
    assert len(shown) == 3 and all(np.array_equal(a, b) for a, b in zip(upright, shown))


def test_ten_bit_video_decodes_close_to_its_eight_bit_twin(tmp_path):
    ten = write_video(tmp_path / "ten.mkv", 4, 64, 48, rate=24, codec="ffv1", pix_fmt="yuv420p10le")
    eight = write_video(tmp_path / "eight.mkv", 4, 64, 48, rate=24, codec="ffv1", pix_fmt="yuv420p")
    for frames in ("jpeg", "direct"):
        a = np.stack(list(decoded_rgb(ten, PRESETS["charades"], frames))).astype(int)
        b = np.stack(list(decoded_rgb(eight, PRESETS["charades"], frames))).astype(int)
        assert a.shape == b.shape == (4, 48, 64, 3)
        assert np.abs(a - b).mean() < 5  # conversion rounding; misread 10-bit samples would be ~100 off


def test_large_frames_decode(tmp_path):
    path = write_video(tmp_path / "big.mp4", 2, 2560, 1440, codec="mpeg4")
    frames = list(decoded_rgb(path, PRESETS["activitynet"], "jpeg"))
    assert [f.shape for f in frames] == [(1440, 2560, 3)] * 2


def test_probe_reads_rate_and_duration(tmp_path):
    info = probe(write_video(tmp_path / "v.mp4", 36, rate=24))
    assert (info.width, info.height, info.rate) == (64, 48, 24)
    assert info.duration == pytest.approx(1.5, abs=0.05)


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="not a readable video file"):
        list(decode_frames(tmp_path / "notes.mp4", None, "rgb24"))
    with pytest.raises(VideoError, match="no such file"):
        list(decode_frames(tmp_path / "absent.mp4", None, "rgb24"))
    with av.open(str(tmp_path / "sound.m4a"), "w") as container:  # audio only
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        probe(tmp_path / "sound.m4a")
    data = (tmp_path / "good.mp4")
    write_video(data, 10)
    (tmp_path / "cut.mp4").write_bytes(data.read_bytes()[:200])  # header only, truncated
    with pytest.raises(VideoError, match="video"):
        list(decode_frames(tmp_path / "cut.mp4", None, "rgb24"))
