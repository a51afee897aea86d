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
from tests.engine.video.videos import failing_video
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


def test_extract_features_eager_runtime_equals_the_compiled_default(video_clip, tmp_path, i3d_weights):
    pytest.importorskip("openvino", reason="the compiled I3D needs OpenVINO")
    _, video, compiled = video_clip  # the fixture extracts with the CPU's default: OpenVINO, f32
    proc = run_cli("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--video", str(video),
                   "--out", str(tmp_path / "eager.npy"), "--device", "cpu", "--runtime", "eager")
    assert proc.returncode == 0, proc.stderr
    eager = np.load(tmp_path / "eager.npy")
    assert eager.shape == compiled.shape and np.linalg.norm(compiled - eager) / np.linalg.norm(eager) < 1e-5


def test_a_video_failing_mid_decode_is_one_line_and_writes_nothing(tmp_path, i3d_weights):
    broken = failing_video(tmp_path / "broken.avi", 80)
    out = tmp_path / "broken.npy"
    proc = run_cli("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--video", str(broken),
                   "--out", str(out), "--device", "cpu")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "broken.avi: decoding failed" in last and "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [broken]


def test_an_interrupted_folder_run_resumes(tmp_path, i3d_weights, monkeypatch):
    import engine.video.extract as extract

    folder, out = tmp_path / "videos", tmp_path / "feats"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_video(folder / f"{name}.mp4", 11, rate=24)  # one window each
    calls = []

    def interrupted_after_one(windows):
        calls.append(len(windows))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return np.full((len(windows), 1, 1024), 7, np.float32)

    real_runner = extract.make_runner
    monkeypatch.setattr(extract, "make_runner", lambda *args, **kwargs: interrupted_after_one)
    args = ("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--videos", str(folder),
            "--out", str(out), "--device", "cpu", "--batch-size", "1")
    first = run_cli(*args)
    assert first.returncode == 130 and "interrupted" in first.stderr
    assert [p.name for p in out.iterdir()] == ["a.npy"]  # whole files only, no partial one

    monkeypatch.setattr(extract, "make_runner", real_runner)
    again = run_cli(*args)
    assert again.returncode == 0 and "2 extracted, 1 already there, 0 failed" in again.stderr
    assert np.all(np.load(out / "a.npy") == 7)  # kept, not extracted again
    expected = extract.make_extractor(i3d_weights, "charades", device="cpu", batch_size=1).extract(folder / "b.mp4")
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "c.npy"]
    assert np.array_equal(np.load(out / "b.npy"), expected)


@pytest.mark.parametrize("extra,words", [
    (["--runtime", "eager", "--precision", "bf16"], "eager I3D in bf16 needs a CUDA device"),
    (["--runtime", "openvino", "--precision", "fp16"], "runs fp32 or bf16, not 'fp16'"),
])
def test_extract_features_runtime_and_precision_that_do_not_fit(video_clip, tmp_path, i3d_weights, extra, words):
    pytest.importorskip("openvino", reason="the compiled I3D needs OpenVINO")
    _, video, _ = video_clip
    proc = run_cli("extract-features", "--i3d", str(i3d_weights), "--preset", "charades", "--video", str(video),
                   "--out", str(tmp_path / "o.npy"), "--device", "cpu", *extra)
    assert proc.returncode == 2 and words in proc.stderr.splitlines()[-1] and not (tmp_path / "o.npy").exists()
