"""A checkpoint and a features root (with a folder and symlinks outside it) for the serving tests."""
from __future__ import annotations

import os

import numpy as np
import pytest

from engine.io.checkpoint import save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT


@pytest.fixture(scope="package")
def serve_files(tmp_path_factory):
    """(checkpoint, features root, a folder outside the root); the root holds a.npy (20 clips),
    b.npy (70), sub/c.npy (1), and symlinks that lead outside it: link.npy and linkdir/."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    gen = np.random.default_rng(0)
    for path, clips in ((root / "a.npy", 20), (root / "b.npy", 70), (root / "sub" / "c.npy", 1),
                        (outside / "secret.npy", 5)):
        np.save(path, gen.standard_normal((clips, CFG.visual_dim)).astype(np.float32))
    os.symlink(outside / "secret.npy", root / "link.npy")
    os.symlink(outside, root / "linkdir")
    ckpt = save_checkpoint(base / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    return ckpt, root, outside


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    """Served results equal the engine's own: same ids, errors, clip indices and seconds; scores equal
    to float32 rounding (a process with another thread count sums in another order)."""
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    for g, e in zip(got, expected):
        assert set(g) == set(e), (g, e)
        if "error" in e:
            assert g["error"] == e["error"]
            continue
        assert (g["start_index"], g["end_index"], g["start"], g["end"]) == \
               (e["start_index"], e["end_index"], e["start"], e["end"]), (g, e)
        assert g["score"] == pytest.approx(e["score"], rel=1e-5)


@pytest.fixture(scope="package")
def page_files(tmp_path_factory, video_checkpoint, i3d_weights):
    """What the page can ground, for a checkpoint of I3D features: (checkpoint, I3D weights, features
    root, durations.json, videos folder, folder outside both). The root holds walk.npy (40 clips;
    12.5 s in durations.json), sub/run.npy (9 clips, no duration) and link.npy -> outside; the videos
    folder clip.mp4 (3 s, 24 fps), notes.txt and out.mp4 -> outside/secret.mp4."""
    pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
    pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")
    from engine.video.synthetic import write_video

    base = tmp_path_factory.mktemp("page")
    root, videos, outside = base / "features", base / "videos", base / "outside"
    for folder in (root / "sub", videos, outside):
        folder.mkdir(parents=True)
    gen = np.random.default_rng(1)
    for path, clips in ((root / "walk.npy", 40), (root / "sub" / "run.npy", 9), (outside / "secret.npy", 5)):
        np.save(path, gen.standard_normal((clips, 1024)).astype(np.float32))
    durations = base / "durations.json"
    durations.write_text('{"walk": 12.5, "absent": 3.0}', encoding="utf-8")
    write_video(videos / "clip.mp4", 72, 96, 72, rate=24)
    write_video(outside / "secret.mp4", 30, 64, 48, rate=24)
    (videos / "notes.txt").write_text("not a video", encoding="utf-8")
    os.symlink(outside / "secret.mp4", videos / "out.mp4")
    os.symlink(outside / "secret.npy", root / "link.npy")
    return video_checkpoint, i3d_weights, root, durations, videos, outside


def page_server_args(page_files, *extra: str) -> list[str]:
    """`seqpan serve` arguments for the page's files on a free loopback port (the reference backend, one thread)."""
    ckpt, i3d, root, durations, videos, _ = page_files
    return ["--checkpoint", str(ckpt), "--port", "0", "--features-root", str(root), "--durations", str(durations),
            "--videos", str(videos), "--i3d", str(i3d), "--device", "cpu", "--backend", "reference",
            "--threads", "1", "--max-wait-ms", "0", *extra]
