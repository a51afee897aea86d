"""`seqpan extract-features --ray`: on a local Ray with 2 workers, features bitwise equal to the
single-process run, a bad video its own error, an interrupted run resumed, and a worker killed
mid-run retried by Ray without losing or duplicating a video."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

from engine.video.synthetic import write_video  # noqa: E402 (after the skips)
from tests.helpers import run_cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")
NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory, i3d_weights):
    """Four short videos and a file that is not one, and their features from the single-process command
    run with one thread, as each worker of a 2-CPU Ray runs (oneDNN's sums depend on the thread count)."""
    root = tmp_path_factory.mktemp("extract_ray")
    folder = root / "videos"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        write_video(folder / f"{name}.mp4", 11 + 7 * i, 48, 40, rate=24)
    (folder / "broken.mp4").write_text("not a video")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        proc = extract(i3d_weights, folder, root / "alone")
    finally:
        torch.set_num_threads(threads)
    assert proc.returncode == 1 and "4 extracted" in proc.stderr
    return folder, {name: np.load(root / "alone" / f"{name}.npy") for name in NAMES}


def extract(weights, folder, out, *extra):
    return run_cli("extract-features", "--i3d", str(weights), "--preset", "charades", "--videos", str(folder),
                   "--out", str(out), "--device", "cpu", "--batch-size", "2", *extra)


def assert_features(out, expected):
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.npy" for name in expected)
    for name, features in expected.items():
        assert np.array_equal(np.load(out / f"{name}.npy"), features), name


def test_features_equal_the_single_process_run_and_a_bad_video_is_reported(videos, i3d_weights, tmp_path):
    folder, expected = videos
    proc = extract(i3d_weights, folder, tmp_path / "out", "--ray", "--workers", "2")
    assert proc.returncode == 1 and "broken.mp4: video" in proc.stderr and "Traceback" not in proc.stderr
    assert "4 extracted, 0 already there, 1 failed" in proc.stderr
    assert_features(tmp_path / "out", expected)


def test_an_interrupted_run_resumes(videos, i3d_weights, tmp_path):
    from engine.cli.extract_features import save_features
    from engine.offline.extract import ExtractorSpec, RayExtractor

    folder, expected = videos
    spec = ExtractorSpec(str(i3d_weights), device="cpu", batch_size=2, threads=1)
    run = RayExtractor(spec.build, 2, {"num_cpus": 1}).extract_many(sorted(folder.glob("*.mp4")))
    path, features = next(run)  # the first video written, then the run stops
    run.close()
    save_features(tmp_path / "out" / f"{path.stem}.npy", features)
    proc = extract(i3d_weights, folder, tmp_path / "out", "--ray")
    assert "3 extracted, 1 already there, 1 failed" in proc.stderr
    assert_features(tmp_path / "out", expected)


class DiesOnce:
    """Builds the real extractor, whose `extract_many` ends its process (as a killed worker) the first
    time it is given video `trigger`; `marker` records that it happened."""

    def __init__(self, build, marker, trigger):
        self.build, self.marker, self.trigger = build, str(marker), trigger

    def __call__(self):
        extractor = self.build()
        extract_many, marker, trigger = extractor.extract_many, self.marker, self.trigger

        def dying_extract_many(paths):
            paths = list(paths)
            if any(os.path.basename(p) == trigger for p in paths) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return extract_many(paths)

        extractor.extract_many = dying_extract_many
        return extractor


def test_a_killed_worker_is_retried_without_losing_or_duplicating(videos, i3d_weights, tmp_path):
    from engine.offline.extract import ExtractorSpec, RayExtractor

    folder, expected = videos
    spec = ExtractorSpec(str(i3d_weights), device="cpu", batch_size=2, threads=1)
    paths = [folder / f"{name}.mp4" for name in NAMES]
    results = list(RayExtractor(DiesOnce(spec.build, tmp_path / "died", "c.mp4"), 2, {"num_cpus": 1},
                                videos_per_call=1).extract_many(paths))
    assert (tmp_path / "died").exists()  # a worker did die mid-run
    assert [path for path, _ in results] == paths
    for (path, features), name in zip(results, NAMES):
        assert np.array_equal(features, expected[name]), name
