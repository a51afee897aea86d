"""The preparation stage (engine.prepare) as a careless or hostile caller meets it (issue #11): every
field checked where it enters, each bad request its own one-line error, the good ones beside it served
as if alone; the path policy, the request's features and video key, its bucket."""
from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import torch

from engine import GroundingEngine, GroundingRequest, Limits, RequestError
from tests.engine.test_engine import CFG, CHAR_DICT, WORD_DICT, make_engine
from tests.helpers import Text, assert_same_answer

FEATS = np.random.default_rng(0).standard_normal((12, CFG.visual_dim)).astype(np.float32)
GOOD = GroundingRequest(FEATS, "person opens the door", 10.0, id="good")


def npy_header_only(path, shape, descr="<f4"):
    """A .npy file whose header claims `shape` and that holds no data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return path


def ground_beside_good(bad: GroundingRequest, engine: GroundingEngine | None = None):
    """Ground [good, bad, good]; the good ones must get exactly their answer alone."""
    engine = engine or make_engine()
    alone = engine.ground([GOOD])[0]
    results = engine.ground([GOOD, bad, GOOD])
    assert alone.error is None
    for r in (results[0], results[2]):
        assert_same_answer(r, alone)
    return results[1]


def bad_request(**change) -> GroundingRequest:
    fields = dict(features=FEATS, query="person opens the door", duration=10.0, id="bad")
    return GroundingRequest(**{**fields, **change})


@pytest.mark.parametrize("change, message", [
    (dict(duration=int("1" + "0" * 400)), "too large"),  # OverflowError converting to float
    (dict(features="/tmp/a\0b.npy"), "NUL"),
    (dict(seed="x"), "seed must be an integer"),
    (dict(seed=-1), "seed must lie in"),
    (dict(seed=2**64), "seed must lie in"),
    (dict(query=5), "query must be a string, got int"),  # was "query is empty"
    (dict(query=None), "query must be a string"),
    (dict(video_id=["a"]), "video_id must be a string"),
    (dict(features={"a": 1}), "features must be"),
    (dict(features=None), "features must be"),
    (dict(features=[[1.0] * CFG.visual_dim, [1.0]]), "clip 1 is not a list"),
    (dict(features=[["1"] * CFG.visual_dim]), "other than numbers"),
    (dict(features=[[10**400] * CFG.visual_dim]), "too large"),
    (dict(features=torch.ones(3, CFG.visual_dim, dtype=torch.complex64)), "real numbers"),
    (dict(duration=1e308), "limit"),  # gave "start": NaN, "end": Infinity
])
def test_issue11_2_bad_field_is_that_requests_error_only(change, message):
    """Issue #11 (2, 6, 9): each of these raised out of `ground` (sinking the whole batch) or
    answered with NaN; now it is that request's one-line error."""
    result = ground_beside_good(bad_request(**change))
    assert result.error is not None and message in result.error, result.error
    assert "\n" not in result.error and result.id == "bad"
    json.dumps(result.to_json(), allow_nan=False)


@pytest.mark.parametrize("request_obj", [None, {"features": "a.npy", "query": "q", "duration": 3}, "text", 7])
def test_issue11_2_non_request_objects_get_an_error_result(request_obj):
    """Issue #11 (2): `ground([good, None])` raised AttributeError for everyone."""
    result = ground_beside_good(request_obj)
    assert result.error.startswith("expected a GroundingRequest") and result.id is None


def test_issue11_2_huge_npy_header_is_refused_from_the_header(tmp_path):
    """Issue #11 (2): a header claiming (10**30, D) raised OverflowError for the whole batch, and
    (10**8, D) tried to allocate the array; both are refused before any allocation."""
    tracemalloc.start()
    try:
        for shape in [(10**30, CFG.visual_dim), (10**8, CFG.visual_dim), (1, 10**8, CFG.visual_dim)]:
            result = ground_beside_good(bad_request(features=str(npy_header_only(tmp_path / "h.npy", shape))))
            assert "more than the limit" in result.error, result.error
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_issue11_2_features_as_tensor_or_list_equal_the_array(dtype):
    """Issue #11 (2): features as a list or a tensor raised TypeError; they are converted (a tensor
    of any real dtype, a [T][D] list of numbers) and give the array's answer."""
    values = np.round(FEATS * 4).astype(np.float32)  # small integers: exact in every dtype tried
    expected = make_engine().ground([GroundingRequest(values, GOOD.query, 10.0)])[0]
    for features in (torch.from_numpy(values).to(dtype), values.tolist()):
        assert_same_answer(make_engine().ground([GroundingRequest(features, GOOD.query, 10.0)])[0], expected)
        assert ground_beside_good(bad_request(features=features)).error is None


def test_issue11_4_long_words_and_queries_are_refused_before_work():
    """Issue #11 (4): a 1M-character word took 7.9 GB and 43 s; the query and its words are bounded."""
    tracemalloc.start()
    try:
        huge = ground_beside_good(bad_request(query="a" * 1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than the limit of 2000" in huge.error and peak < 16 * 2**20


def test_issue11_4_a_word_longer_than_the_limit_is_refused():
    """Issue #11 (4): characters per word were never bounded (the char CNN runs over every one)."""
    long_word = ground_beside_good(bad_request(query="person opens the " + "d" * 65))
    assert "word of 65 characters" in long_word.error
    words_past_max_pos_len = " ".join(["door"] * CFG.max_pos_len + ["d" * 65])  # cut off: never read
    assert ground_beside_good(bad_request(query=words_past_max_pos_len)).error is None


def test_issue11_4_limits_are_configurable():
    from engine import Limits, UsageError

    engine = make_engine(limits=Limits(max_query_chars=10, max_clips=5, max_word_chars=3))
    results = engine.ground([bad_request(query="a a a a a a"), bad_request(query="person"),
                             bad_request(query="a dog", features=FEATS[:6]),
                             bad_request(query="a dog", features=FEATS[:5])])
    assert "more than the limit of 10" in results[0].error
    assert "word of 6 characters" in results[1].error
    assert "6 clips, more than the limit of 5" in results[2].error
    assert results[3].error is None
    with pytest.raises(UsageError):
        Limits(max_clips=0)


def test_issue11_8_paths_are_confined_to_the_features_root(tmp_path):
    """Issue #11 (8): any absolute or ../ path was read, and the error told whether it existed."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    np.save(root / "sub" / "v.npy", FEATS)
    np.save(outside / "secret.npy", FEATS)
    os.symlink(outside / "secret.npy", root / "link.npy")
    os.symlink(root / "sub" / "v.npy", root / "inner_link.npy")
    engine = make_engine(features_root=root)
    refused = [str(outside / "secret.npy"), "../outside/secret.npy", "link.npy", str(outside / "missing.npy"),
               "missing.npy", "sub", "/dev/zero", "a\0b", str(root / ".." / "outside" / "secret.npy")]
    results = engine.ground([bad_request(features=p) for p in refused])
    messages = {r.error for r in results}
    assert len(messages) == 1 and "refused" in messages.pop()
    expected = make_engine().ground([GroundingRequest(FEATS, GOOD.query, 10.0)])[0]
    for path in ("sub/v.npy", str(root / "sub" / "v.npy"), "inner_link.npy", "sub/../sub/v.npy"):
        assert_same_answer(engine.ground([GroundingRequest(path, GOOD.query, 10.0)])[0], expected)


def test_issue11_8_paths_can_be_refused_altogether(tmp_path):
    np.save(tmp_path / "v.npy", FEATS)
    engine = make_engine(allow_feature_paths=False)
    results = engine.ground([bad_request(features=str(tmp_path / "v.npy")), bad_request(features="nope.npy"), GOOD])
    assert results[0].error == results[1].error and "inline" in results[0].error
    assert results[2].error is None


def test_issue11_9_numpy_scalar_durations_are_accepted():
    """Issue #11 (9): `np.float32(10)` was "duration must be a number"."""
    expected = make_engine().ground([GOOD])[0]
    for duration in (np.float32(10), np.float64(10), np.int64(10), 10):
        got = make_engine().ground([GroundingRequest(FEATS, GOOD.query, duration, id="good")])[0]
        assert_same_answer(got, expected)
    assert "number of seconds" in ground_beside_good(bad_request(duration=np.bool_(True))).error


def test_issue11_9_plain_text_is_not_called_pickled_data(tmp_path):
    """Issue #11 (9): a text file was reported as "contains pickled data"."""
    (tmp_path / "t.npy").write_text("hello, not an array\n")
    result = ground_beside_good(bad_request(features=str(tmp_path / "t.npy")))
    assert "not a NumPy .npy file" in result.error and "pickle" not in result.error


def test_same_video_id_with_other_features_is_not_shared():
    """A request never gets another's video: equal video_ids share an encoding only when the
    features are equal too."""
    other = np.random.default_rng(5).standard_normal((12, CFG.visual_dim)).astype(np.float32)
    engine = make_engine()
    alone = [engine.ground([GroundingRequest(f, GOOD.query, 10.0)])[0] for f in (FEATS, other)]
    together = engine.ground([GroundingRequest(FEATS, GOOD.query, 10.0, video_id="v"),
                              GroundingRequest(other, GOOD.query, 10.0, video_id="v"),
                              GroundingRequest(FEATS.copy(), GOOD.query, 10.0, video_id="v")])
    for got, expected in zip(together, [alone[0], alone[1], alone[0]]):
        assert_same_answer(got, expected)
    cache: dict = {}
    keys = [engine.prepare(GroundingRequest(f, GOOD.query, 10.0, video_id="v"), cache).video_key
            for f in (FEATS, other, FEATS.copy())]
    assert keys[0] == keys[2] != keys[1] and keys[0][0] == "id"


@pytest.mark.parametrize("top_k, nms, message", [(0, None, "got 0"), (-2, None, "got -2"), ("3", None, "got str"),
                                                 (True, None, "got True"), (2, 1.5, "got 1.5"), (2, "0.5", "got str"),
                                                 (2, False, "got False")])
def test_top_k_errors_show_a_number_itself_and_anything_else_by_type(top_k, nms, message):
    from engine import RequestError
    from engine.prepare import check_top_k

    with pytest.raises(RequestError, match=message):
        check_top_k(top_k, nms)


def test_top_k_past_the_limit_is_that_requests_error_alone():
    """K moments with NMS cost O(K^2) Python work: past Limits.max_top_k a request is refused, the
    limit itself is served, and the other requests of the batch are answered."""
    from engine import Limits

    engine = make_engine(limits=Limits(max_top_k=3))
    video = np.random.default_rng(0).standard_normal((20, CFG.visual_dim)).astype(np.float32)
    asks = [GroundingRequest(video, "person opens the door", 10.0, top_k=k, nms=1.0) for k in (4, 3, 10**9)]
    results = engine.ground(asks)
    assert [r.error for r in results[::2]] == [f"top_k {k} is more than the limit of 3 moments" for k in (4, 10**9)]
    assert results[1].error is None and len(results[1].moments) == 3


def test_issue11_8_video_paths_obey_the_features_root(tmp_path):
    """A `video` request names a file too: it is confined like a .npy path."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "clip.mp4").write_bytes(b"not decoded here")
    (tmp_path / "outside.mp4").write_bytes(b"secret")
    opened = []

    def source(path):
        opened.append(path)
        return FEATS, 10.0

    engine = make_engine(video_source=source, features_root=tmp_path / "root")
    results = engine.ground([GroundingRequest(None, GOOD.query, None, video=v, id=v)
                             for v in ("clip.mp4", str(tmp_path / "outside.mp4"), "../outside.mp4", "none.mp4")])
    assert results[0].error is None and opened == [str(tmp_path / "root" / "clip.mp4")]
    assert {r.error for r in results[1:]} == {results[1].error} and "refused" in results[1].error
    closed = make_engine(video_source=source, allow_feature_paths=False).ground(
        [GroundingRequest(None, GOOD.query, None, video="clip.mp4")])[0]
    assert "inline" in closed.error and len(opened) == 1


def test_field_bounds_admit_their_own_values():
    """Bounds by their documentation: a duration is any finite number > 0 up to max_duration, a seed
    any integer in [0, 2**64), an NMS IoU any number in [0, 1]."""
    from engine.prepare import check_duration, check_seed, check_top_k

    tight = Limits(max_duration=50.0)
    assert check_duration(0.5, tight) == 0.5 and check_duration(50, tight) == 50.0
    assert check_seed(0) == 0 and check_seed(2**64 - 1) == 2**64 - 1
    assert check_top_k(2, 0) == (2, 0) and check_top_k(2, 0.5) == (2, 0.5) and check_top_k(2, 1) == (2, 1)


def test_prepare_request_keeps_what_the_request_asks_for(tmp_path):
    """By hand: float64 features become float32 [T, D] (T below max_pos_len kept), the clip bucket is
    T's, the seed's noise is gumbel_noise((T, labels), Generator().manual_seed(seed)), top_k and nms
    are the request's, and a file past max_feature_bytes is refused by its size."""
    from engine.prepare import prepare_request
    from reference.matching import NUM_LABELS, gumbel_noise

    clips = 21
    feats = np.random.default_rng(3).standard_normal((clips, CFG.visual_dim))  # float64
    request = GroundingRequest(feats, "person opens the door", 10.0, seed=7, top_k=3, nms=0.25)
    p = prepare_request(request, CFG, WORD_DICT, CHAR_DICT, {})
    assert p.features.dtype == torch.float32 and tuple(p.features.shape) == (clips, CFG.visual_dim)
    assert torch.equal(p.features, torch.from_numpy(feats.astype(np.float32)))
    assert p.shape.clips == 32 and (p.top_k, p.nms) == (3, 0.25)
    assert torch.equal(p.noise, gumbel_noise((clips, NUM_LABELS), torch.Generator().manual_seed(7)))
    np.save(tmp_path / "v.npy", feats.astype(np.float32))  # 21 x 1024 x 4 bytes of data
    small = Limits(max_feature_bytes=clips * CFG.visual_dim * 4 - 1)
    with pytest.raises(RequestError, match="bytes"):
        prepare_request(GroundingRequest(str(tmp_path / "v.npy"), "door", 10.0), CFG, WORD_DICT, CHAR_DICT, {},
                        limits=small)


@pytest.mark.parametrize("check, value, message", [
    ("check_duration", "3", "duration must be a number of seconds, got str"),
    ("check_duration", 10**400, "duration is too large"),
    ("check_query", " \t", "query is empty"),
    ("check_seed", "x", "seed must be an integer, got str"),
    ("check_seed", -1, "seed must lie in [0, 2**64)"),
    ("check_video_id", 1.5, "video_id must be a string, got float"),
])
def test_each_check_says_exactly_what_is_wrong(check, value, message):
    """The whole one-line message of each field check, not only the field it names (the wire's own
    checks: tests/engine/test_wire.py)."""
    import engine.prepare

    with pytest.raises(RequestError) as err:
        getattr(engine.prepare, check)(value)
    assert str(err.value) == message


def test_a_request_that_is_no_grounding_request_is_named():
    from engine.prepare import prepare_request

    with pytest.raises(RequestError) as err:
        prepare_request("text", CFG, WORD_DICT, CHAR_DICT, {})
    assert str(err.value) == "expected a GroundingRequest, got str"


def test_a_feature_file_error_names_the_path_the_caller_gave(tmp_path):
    """Under a features root, an unusable file is named as the request named it, not by the server's
    real path."""
    from engine.prepare import prepare_request

    (tmp_path / "v.npy").write_text("not an array")
    with pytest.raises(RequestError) as err:
        prepare_request(GroundingRequest("v.npy", "door", 10.0), CFG, WORD_DICT, CHAR_DICT, {},
                        features_root=tmp_path)
    assert "'v.npy'" in str(err.value) and str(tmp_path) not in str(err.value)


def test_video_ids_are_compared_as_plain_text():
    from engine.prepare import check_video_id

    assert check_video_id(np.int64(7)) == "7" and check_video_id(7) == "7"
    assert type(check_video_id(Text("v"))) is str and check_video_id(Text("v")) == "v"


def test_a_video_id_shares_its_own_features_only(tmp_path):
    """Keys by hand: requests with the same video_id and equal features (other objects) share one key;
    a video_id seen first with other features does not take it; another call's key is another."""
    from engine.prepare import CALL_TOKEN

    other = np.random.default_rng(5).standard_normal((12, CFG.visual_dim)).astype(np.float32)
    cache: dict = {}
    keys = [make_engine().prepare(GroundingRequest(f, GOOD.query, 10.0, video_id=v), cache).video_key
            for f, v in [(FEATS, "a"), (other, "b"), (other.copy(), "b"), (FEATS.copy(), "c")]]
    token = cache[CALL_TOKEN]  # the call's own token: no other call's key can equal these
    assert keys[0] == ("id", token, "a") and keys[1] == keys[2] == ("id", token, "b") and keys[3] == ("id", token, "c")
    assert make_engine().prepare(GroundingRequest(FEATS, GOOD.query, 10.0, video_id="a"), {}).video_key != keys[0]


def test_the_clip_bucket_is_the_videos_and_limits_reach_the_duration_check():
    from engine.buckets import clip_bucket
    from engine.prepare import prepare_request

    short = GroundingRequest(FEATS[:3], GOOD.query, 10.0)
    assert prepare_request(short, CFG, WORD_DICT, CHAR_DICT, {}).shape.clips == clip_bucket(3, CFG.max_pos_len) < 32
    with pytest.raises(RequestError, match="limit of 5 s"):
        prepare_request(short, CFG, WORD_DICT, CHAR_DICT, {}, limits=Limits(max_duration=5.0))


def recorded_calls(monkeypatch, name: str) -> list:
    """The values engine.prepare's check `name` is called with from now on (check_fields calls it by
    its module name)."""
    import engine.prepare

    calls, check = [], getattr(engine.prepare, name)

    def recording(value, *args):
        calls.append(value)
        return check(value, *args)

    monkeypatch.setattr(engine.prepare, name, recording)
    return calls


def json_entry(**fields):
    from engine.wire import entry_from_json

    obj = {"features": FEATS.tolist(), "query": GOOD.query, "duration": 10, **fields}
    return entry_from_json(json.dumps(obj), "line 1")


def test_a_json_request_has_each_field_checked_once(monkeypatch):
    """The wire checks a JSON entry's fields (for its label) and the engine does not check them again;
    a field changed afterwards (the CLI's --top-k over a line's own) is checked as the new value it is."""
    from engine.request_lines import ground_entries

    queries, durations, top_ks = (recorded_calls(monkeypatch, n) for n in ("check_query", "check_duration",
                                                                          "check_top_k"))
    entry = json_entry(top_k=2)
    assert make_engine().ground([entry])[0].error is None
    assert (queries, durations, top_ks) == ([GOOD.query], [10], [2])
    assert len(ground_entries(make_engine(), [json_entry(top_k=2)], top_k=3)[0].moments) == 3
    assert (queries, durations, top_ks) == ([GOOD.query] * 2, [10] * 2, [2, 2, 3])


def test_a_json_video_request_has_its_query_checked_once_and_the_files_duration_checked(monkeypatch):
    from engine.wire import entry_from_json

    queries, durations = recorded_calls(monkeypatch, "check_query"), recorded_calls(monkeypatch, "check_duration")
    engine = make_engine(video_source=lambda path: (FEATS, 12.5))
    entry = entry_from_json(json.dumps({"video": "a.mp4", "query": GOOD.query}), "requests[0]")
    result = engine.ground([entry])[0]
    assert result.error is None and result.end <= 12.5
    assert (queries, durations) == ([GOOD.query], [12.5])
    from_python = engine.ground([GroundingRequest(None, GOOD.query, None, video="a.mp4")])[0]
    assert from_python.error is None and queries == [GOOD.query] * 2  # checked by the engine, once
    short = make_engine(video_source=lambda path: (FEATS, 20.0), limits=Limits(max_duration=15.0))
    assert short.ground([entry])[0].error == "duration 20 s is more than the limit of 15 s"


def test_a_request_from_python_changed_or_under_other_limits_is_still_refused(monkeypatch):
    """Every request the engine serves has passed every check under the engine's own limits: one built
    in Python, one read from JSON and then changed, one read under looser limits than the engine's."""
    queries = recorded_calls(monkeypatch, "check_query")
    assert make_engine().ground([bad_request(query=" ")])[0].error == "query is empty"
    changed = json_entry()
    changed.query = 5
    assert make_engine().ground([changed])[0].error == "query must be a string, got int"
    changed.query, changed.seed = GOOD.query, -1
    assert make_engine().ground([changed])[0].error == "seed must lie in [0, 2**64)"
    tight = make_engine(limits=Limits(max_query_chars=10)).ground([json_entry()])[0]
    assert tight.error == "query has 21 characters, more than the limit of 10"
    # the engine's, the wire's, the engine's (5, then the query set again), the wire's and the engine's
    assert queries == [" ", GOOD.query, 5, GOOD.query, GOOD.query, GOOD.query]
