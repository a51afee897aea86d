"""`seqpan extract-features` and `seqpan ground --video`: end to end on a tiny SeqPAN, features equal
the in-process extraction, a folder resumes, bad input is one line."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

import json

import numpy as np

from engine import GroundingEngine, GroundingRequest
from engine.video.decode import probe
from engine.video.synthetic import write_video
from tests.helpers import run_cli


def test_extract_features_single_video(video_clip, i3d_weights):
    root, video, features = video_clip
    out = root / "out" / "clip.npy"
    proc = run_cli("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--video", str(video),
                   "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert features.shape == (2, 1024) and np.array_equal(np.load(out), features)


def test_extract_features_folder_resumes_and_reports_bad_files(tmp_path, i3d_weights):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", 11, rate=24)
    write_video(folder / "b.avi", 11, rate=24, codec="mpeg4")
    (folder / "broken.mp4").write_text("not a video")
    (folder / "notes.txt").write_text("ignored")
    args = ("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--videos", str(folder),
            "--out", str(tmp_path / "feats"), "--device", "cpu", "--batch-size", "2")
    first = run_cli(*args)
    assert first.returncode == 1 and "broken.mp4: video" in first.stderr and "2 extracted" in first.stderr
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["a.npy", "b.npy"]
    stamp = (tmp_path / "feats" / "a.npy").stat().st_mtime_ns
    again = run_cli(*args)
    assert "0 extracted, 2 already there, 1 failed" in again.stderr
    assert (tmp_path / "feats" / "a.npy").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("extra,words", [
    ([], "one of --video"),
    (["--video", "absent.mp4"], "video not found"),
    (["--video", "{text}"], "not a readable video file"),
    (["--video", "{video}", "--i3d", "{text}"], "not a PyTorch state dict"),
    (["--video", "{video}", "--preset", "kinetics"], "invalid choice"),
])
def test_extract_features_bad_input(video_clip, tmp_path, i3d_weights, extra, words):
    root, video, _ = video_clip
    (tmp_path / "t.mp4").write_text("text")
    args = ["extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--out", str(tmp_path / "o.npy")]
    args += [a.format(text=tmp_path / "t.mp4", video=video) for a in extra]
    proc = run_cli(*args)
    assert proc.returncode == 2 and words in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npy").exists()


def test_ground_a_video_file(video_clip, video_checkpoint, i3d_weights):
    root, video, features = video_clip
    proc = run_cli("ground", "--checkpoint", str(video_checkpoint), "--i3d", str(i3d_weights), "--video", str(video),
                   "--query", "person opens the door", "--device", "cpu", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    duration = probe(video).duration
    expected = GroundingEngine.from_checkpoint(video_checkpoint, device="cpu").ground(
        [GroundingRequest(features, "person opens the door", duration, top_k=2)])[0].to_json()
    assert {k: v for k, v in got.items() if k != "id"} == {k: v for k, v in expected.items() if k != "id"}
    assert len(got["moments"]) == 2 and 0 <= got["start"] <= got["end"] <= duration


def test_requests_file_with_videos(video_clip, video_checkpoint, i3d_weights, tmp_path):
    root, video, features = video_clip
    lines = [json.dumps({"video": str(video), "query": "person opens the door", "id": "v1"}),
             json.dumps({"video": "missing.mp4", "query": "door", "id": "v2"}),
             json.dumps({"features": "x.npy", "video": str(video), "query": "door", "duration": 3, "id": "both"})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_cli("ground", "--checkpoint", str(video_checkpoint), "--i3d", str(i3d_weights), "--requests",
                   str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--device", "cpu")
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert proc.returncode == 1 and [r["id"] for r in results] == ["v1", "v2", "both"]
    assert "start" in results[0] and "no such file" in results[1]["error"] and "error" in results[2]
