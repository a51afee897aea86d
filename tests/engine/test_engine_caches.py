"""What the engine keeps between calls: a query's tokens and encoding per text, a feature file's
features per file identity. Answers with the caches equal those without, bitwise; a changed file is
read again."""
from __future__ import annotations

import os

import numpy as np

from engine import GroundingEngine, GroundingRequest
from reference.testing import random_model
from tests.helpers import small_config

CFG = small_config(max_pos_len=32)
MODEL = random_model(CFG, seed=3)
WORDS = ["person", "opens", "the", "door", "a", "sits", "on", "chair"]
WORD_DICT = {"<PAD>": 0, "<UNK>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
CHAR_DICT = {"<PAD>": 0, "<UNK>": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}


def counting(engine: GroundingEngine) -> dict[str, int]:
    """Calls of each stage of `engine` from now on."""
    calls = {"video": 0, "query": 0, "cross": 0}
    run = engine.step.run

    def counted(name, *inputs):
        calls[name] += 1
        return run(name, *inputs)

    engine.step.run = counted
    return calls


def test_a_repeated_query_skips_the_query_stage_with_bitwise_equal_answers():
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((n, CFG.visual_dim)).astype(np.float32) for n in (5, 32, 40)]
    queries = ["person opens the door", "a person sits on a chair", "the door"]
    requests = [GroundingRequest(videos[i % 3], queries[i % 2 if i < 4 else 2], 20.0, id=i) for i in range(6)]
    cached = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference")
    uncached = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", query_cache=0)
    calls = counting(cached)
    first = [r.to_json() for r in cached.ground(requests)]
    assert calls["query"] == 3  # one per distinct text
    second = [r.to_json() for r in cached.ground(requests[::-1])]
    assert calls["query"] == 3 and len(cached.encoded_queries) == 3
    expected = [r.to_json() for r in uncached.ground(requests)]
    assert first == expected and second == expected[::-1]


def test_a_feature_file_is_read_once_across_calls_and_again_when_it_changes(tmp_path):
    path = tmp_path / "v.npy"
    rng = np.random.default_rng(1)
    np.save(path, rng.standard_normal((20, CFG.visual_dim)).astype(np.float32))
    engine = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference")
    request = GroundingRequest(str(path), "person opens the door", 20.0)
    before = engine.ground([request])[0]
    assert len(engine.feature_files) == 1 and engine.feature_files.misses == 1
    assert engine.ground([request])[0].to_json() == before.to_json() and engine.feature_files.hits == 1
    changed = rng.standard_normal((20, CFG.visual_dim)).astype(np.float32) * 3
    np.save(path, changed)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later modification time, as a rewrite gives
    after = engine.ground([request])[0]
    fresh = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", feature_cache=0)
    assert after.to_json() == fresh.ground([GroundingRequest(changed, "person opens the door", 20.0)])[0].to_json()
    assert len(engine.feature_files) == 2  # the old identity stays until it is the least recently used


def test_a_recent_video_skips_the_video_stage_equal_answers_and_no_leak_between_callers(tmp_path):
    """Kept by content (arrays) or file identity (paths): a copy of a seen array hits, a different
    video under the same video_id does not; a changed file is encoded again; the bound holds."""
    rng = np.random.default_rng(2)
    video, other = (rng.standard_normal((24, CFG.visual_dim)).astype(np.float32) for _ in range(2))
    engine = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", video_cache=2)
    plain = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", video_cache=0)
    calls = counting(engine)
    first = engine.ground([GroundingRequest(video, "person opens the door", 20.0, video_id="v")])[0]
    again = engine.ground([GroundingRequest(video.copy(), "a person sits", 20.0, video_id="w")])[0]
    assert calls["video"] == 1
    leak = engine.ground([GroundingRequest(other, "person opens the door", 20.0, video_id="v")])[0]
    assert calls["video"] == 2  # the same video_id with other features is another video
    for got, (features, query) in zip((first, again, leak), ((video, "person opens the door"),
                                                            (video, "a person sits"), (other, "person opens the door"))):
        assert got.to_json() == plain.ground([GroundingRequest(features, query, 20.0)])[0].to_json()
    path = tmp_path / "v.npy"
    np.save(path, video)
    engine.ground([GroundingRequest(str(path), "the door", 20.0)])
    assert calls["video"] == 3 and len(engine.encoded_videos) == 2  # a file is keyed by its identity; bound 2
    np.save(path, other)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = engine.ground([GroundingRequest(str(path), "the door", 20.0)])[0]
    assert calls["video"] == 4
    assert changed.to_json() == plain.ground([GroundingRequest(other, "the door", 20.0)])[0].to_json()


def test_the_feature_and_video_caches_are_bounded_in_bytes(tmp_path):
    """cache_bytes bounds each of the two tensor caches: an encoded video here is [1, 32, 32] float32
    (4,096 bytes), a file's features [24, 24] (2,304): 10,000 bytes keep two videos and four files."""
    rng = np.random.default_rng(4)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], rng.standard_normal((24, CFG.visual_dim)).astype(np.float32))
    engine = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", cache_bytes=10_000)
    plain = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", video_cache=0,
                            feature_cache=0)
    requests = [GroundingRequest(str(p), "person opens the door", 20.0) for p in paths]
    got = [r.to_json() for r in engine.ground(requests)]
    assert (len(engine.encoded_videos), engine.encoded_videos.bytes) == (2, 2 * 32 * 32 * 4)
    assert (len(engine.feature_files), engine.feature_files.bytes) == (4, 4 * 24 * 24 * 4)
    assert got == [r.to_json() for r in plain.ground(requests)]
