"""Batched extraction equals window-by-window extraction (the original ran each window alone)."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

import itertools
import time
from dataclasses import replace

import av
import numpy as np

from engine.video.errors import VideoError
from engine.video.extract import FeatureExtractor
from engine.video.frames import video_crops
from engine.video.presets import PRESETS
from engine.video.eager_i3d import WindowRunner
from engine.video.weights import random_i3d
from engine.video.windows import plan_windows

from .videos import failing_video, write_video


class WindowSummary:
    """A stand-in for I3D that is cheap and tells windows apart: per output step j of a window of
    L frames, the mean of each frame (L values), then j and L; the rest zero."""

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, windows):
        self.batch_sizes.append(len(windows))
        count, length = windows.shape[:2]
        steps = -(-length // 8) - 1
        out = np.zeros((count, steps, 1024), np.float32)
        out[:, :, :length] = windows.reshape(count, length, -1).mean(-1)[:, None, :]
        out[:, :, length] = np.arange(steps)
        out[:, :, length + 1] = length
        return out


def window_by_window(path, preset, runner):
    """The original's loop: every window of the plan run alone, features concatenated."""
    crops = np.stack(list(video_crops(path, preset)))
    windows = plan_windows(len(crops), preset.window, preset.chunk_frames)
    return np.concatenate([runner(crops[None, a:b])[0] for a, b in windows])


def test_batched_extraction_over_several_videos_equals_window_by_window(tmp_path):
    preset = replace(PRESETS["activitynet"], window=10, chunk_frames=25)  # small, to reach every rule
    videos = [write_video(tmp_path / "a.mp4", 57), tmp_path / "broken.mp4", write_video(tmp_path / "b.mp4", 16),
              write_video(tmp_path / "c.mp4", 33, 48, 64)]
    videos[1].write_text("not a video")
    runner = WindowSummary()
    results = dict(FeatureExtractor(runner, preset, batch_size=3).extract_many(videos))
    assert set(results) == set(videos)
    assert isinstance(results[videos[1]], VideoError)
    assert max(runner.batch_sizes) == 3 and runner.batch_sizes.count(3) >= 3  # windows of different videos shared forwards
    for path in (videos[0], videos[2], videos[3]):
        expected = window_by_window(path, preset, WindowSummary())
        assert results[path].dtype == np.float32 and np.array_equal(results[path], expected)
    # 57 frames, chunks of 25: [0, 25) and [25, 50) have 3 windows each; [50, 57) is shorter than a
    # window, so it becomes [47, 57), one window of 9 frames
    assert len(results[videos[0]]) == 7


def test_i3d_batched_equals_one_window_at_a_time(tmp_path):
    preset = replace(PRESETS["activitynet"], window=9)  # 11 frames → windows [0, 9) and [1, 10)
    video = write_video(tmp_path / "v.mp4", 11, 96, 72)
    runner = WindowRunner(random_i3d(0))
    batched = FeatureExtractor(runner, preset, batch_size=2).extract(video)
    alone = FeatureExtractor(runner, preset, batch_size=1).extract(video)
    assert batched.shape == alone.shape == (2, 1024)
    assert np.linalg.norm(batched - alone) / np.linalg.norm(alone) < 1e-5
    # the two windows differ by one frame; He-scaled weights keep that visible in the features
    assert np.linalg.norm(alone[0] - alone[1]) / np.linalg.norm(alone[0]) > 1e-3


def test_short_and_empty_videos_are_clear_errors(tmp_path):
    preset = PRESETS["charades"]
    extractor = FeatureExtractor(WindowSummary(), preset)
    short = write_video(tmp_path / "short.mp4", 11, rate=24)  # 11 frames: one window of 10
    assert extractor.extract(short).shape == (1, 1024)
    with pytest.raises(VideoError, match="too short"):
        extractor.extract(write_video(tmp_path / "shorter.mp4", 9, rate=24))
    with av.open(str(tmp_path / "empty.mkv"), "w") as container:  # a header and no frame
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match="empty.mkv: not a readable video file"):
        extractor.extract(tmp_path / "empty.mkv")


def test_compiled_extraction_equals_eager_over_videos_of_several_lengths(tmp_path):
    pytest.importorskip("openvino", reason="the compiled I3D needs OpenVINO")
    from engine.video.compiled_i3d import CompiledWindowRunner

    preset = replace(PRESETS["activitynet"], window=9)
    # 11 frames: windows [0, 9), [1, 10); 21 frames: [0, 9), [9, 18), [11, 20); by 2: batches of 2, 2, 1
    videos = [write_video(tmp_path / "a.mp4", 11, 96, 72), write_video(tmp_path / "b.mp4", 21, 80, 64)]
    model = random_i3d(0)
    compiled = CompiledWindowRunner(model, cache_dir=tmp_path / "cache")
    got = dict(FeatureExtractor(compiled, preset, batch_size=2).extract_many(videos))
    expected = dict(FeatureExtractor(WindowRunner(model), preset, batch_size=2).extract_many(videos))
    assert set(compiled.status) == {(2, 9), (1, 9)}  # the last batch is partial
    for path, rows in ((videos[0], 2), (videos[1], 3)):
        assert got[path].shape == expected[path].shape == (rows, 1024)
        assert np.linalg.norm(got[path] - expected[path]) / np.linalg.norm(expected[path]) < 1e-5


def test_a_video_failing_mid_decode_is_its_error_alone(tmp_path):
    preset = replace(PRESETS["charades"], window=9)
    good = [write_video(tmp_path / "a.mp4", 40, rate=24), write_video(tmp_path / "c.mp4", 30, rate=24)]
    broken = failing_video(tmp_path / "b.avi", 80)
    assert sum(1 for _ in itertools.islice(video_crops(broken, preset), 20)) == 20  # its first windows decode
    runner = WindowSummary()
    results = dict(FeatureExtractor(runner, preset, batch_size=4).extract_many([good[0], broken, good[1]]))
    assert isinstance(results[broken], VideoError) and "b.avi: decoding failed" in str(results[broken])
    assert "\n" not in str(results[broken])
    for path in good:  # windows of the broken video that were queued with theirs changed nothing
        assert np.array_equal(results[path], window_by_window(path, preset, WindowSummary()))


def test_the_producer_decodes_ahead_while_the_network_runs_bounded_by_its_buffer(tmp_path):
    preset = replace(PRESETS["charades"], window=9)  # window k is frames [9k, 9k + 9), known at frame 9k + 10
    video = write_video(tmp_path / "v.mp4", 60, rate=24)
    decoded, at_forward = [], []

    class Slow(WindowSummary):
        def __call__(self, windows):
            if not at_forward:  # the first forward waits until the producer can go no further
                deadline = time.monotonic() + 10
                while len(decoded) < 37 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
                at_forward.append(len(decoded))
            return super().__call__(windows)

    extractor = FeatureExtractor(Slow(), preset, batch_size=1, buffer=2)
    extractor.on_frame = lambda: decoded.append(1)
    assert np.array_equal(extractor.extract(video), window_by_window(video, preset, WindowSummary()))
    # while window 0 runs: windows 1 and 2 in the buffer, window 3 (done at frame 37) waiting for room
    assert at_forward == [37] and len(decoded) == 60


def test_an_unknown_frames_mode_is_refused_by_the_extractor_and_by_the_decoder(tmp_path):
    """One check of the frames mode: both entry points name the mode and the known ones."""
    with pytest.raises(VideoError, match=r"unknown frames mode 'png' \(known: jpeg, direct\)"):
        FeatureExtractor(WindowSummary(), PRESETS["charades"], frames="png")
    with pytest.raises(VideoError, match=r"unknown frames mode 'png' \(known: jpeg, direct\)"):
        next(video_crops(tmp_path / "missing.mp4", PRESETS["charades"], frames="png"))
