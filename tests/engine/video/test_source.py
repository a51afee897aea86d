"""VideoFeatureSource behind a GroundingEngine: a video's features are extracted once for all its
queries, equal the in-process extraction, and a bad or missing video is that request's error."""
import pytest

pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")

from engine import GroundingEngine, GroundingRequest
from engine.video.decode import probe
from engine.video.extract import make_extractor
from engine.video.source import VideoFeatureSource


def test_video_requests_extract_once_and_share_the_video(video_clip, video_checkpoint, i3d_weights, tmp_path):
    root, video, features = video_clip
    source = VideoFeatureSource(make_extractor(i3d_weights, "charades", device="cpu"))
    engine = GroundingEngine.from_checkpoint(video_checkpoint, device="cpu", video_source=source)
    queries = ["person opens the door", "a person sits on chair", "walks into room"]
    first = engine.ground([GroundingRequest(None, q, None, video=video, id=q) for q in queries])
    again = engine.ground([GroundingRequest(None, queries[0], 3.0, video=str(video))])
    assert source.extractions == 1
    prepared = engine.prepare_all([GroundingRequest(None, q, None, video=video) for q in queries])
    assert len({p.video_key for p in prepared}) == 1  # one call: one video, one key
    duration = probe(video).duration
    expected = GroundingEngine.from_checkpoint(video_checkpoint, device="cpu").ground(
        [GroundingRequest(features, q, duration, id=q) for q in queries])
    assert [r.to_json() for r in first] == [r.to_json() for r in expected]
    assert again[0].end <= 3.0  # a given duration wins over the file's
    missing = engine.ground([GroundingRequest(None, "door", None, video=tmp_path / "absent.mp4")])[0]
    assert "no such file" in missing.error
    without = GroundingEngine.from_checkpoint(video_checkpoint, device="cpu").ground(
        [GroundingRequest(None, "door", None, video=video)])[0]
    assert "video source" in without.error
