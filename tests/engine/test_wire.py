"""The wire protocol (engine.wire): a request from its JSON object, the entry reader and the merge of
answers back into input order, which the CLI's requests files and the server's bodies share, results
written as strict JSON, and binary features (base64 with a shape)."""
import base64
import json

import numpy as np
import pytest

from engine import RequestError
from engine.data import features as features_module
from engine.limits import Limits
from engine.requests import GroundingRequest, GroundingResult, RegisteredVideo
from engine.wire import entry_from_json, in_input_order
from tests.engine.test_engine import CFG, make_engine


def test_an_entry_is_its_request_or_its_error_under_its_label(tmp_path):
    good = entry_from_json(b'{"features": "a.npy", "query": "door", "duration": 3}', "line 4", default_id=4,
                           base=tmp_path)
    assert isinstance(good, GroundingRequest)
    assert (good.id, good.features, good.query, good.duration) == (4, tmp_path / "a.npy", "door", 3.0)
    bad_field = entry_from_json('{"id": "q", "features": [[0.5]], "query": "", "duration": 3}', "requests[2]")
    assert (bad_field.id, bad_field.error) == ("q", "requests[2]: query is empty")
    not_json = entry_from_json(b'{"id": "q", "query": NaN}', "line 9")
    assert not_json.id is None and not_json.error.startswith("line 9: not valid JSON")
    bad_id = entry_from_json('{"id": {"a": 1}, "features": [[0.5]], "query": "door", "duration": 3}', "line 1")
    assert (bad_id.id, bad_id.error) == (None, "line 1: id must be a string, a number or null, got dict")


def test_answers_go_back_between_the_entries_errors_in_input_order():
    requests = [GroundingRequest([[0.0]], f"q{i}", 1.0, id=i) for i in range(3)]
    refused = [GroundingResult("x", error="line 2: bad"), GroundingResult("y", error="line 5: bad")]
    entries = [requests[0], refused[0], requests[1], requests[2], refused[1]]
    answers = [GroundingResult(i, start=float(i)) for i in range(3)]
    assert in_input_order(entries, answers) == [answers[0], refused[0], answers[1], answers[2], refused[1]]
    assert in_input_order(refused, []) == refused


# -- binary features: {"shape": [T, D], "dtype": "float32", "base64": ...} -------------------------------------
def binary(features: np.ndarray, dtype: str = "float32") -> dict:
    """The JSON object of binary features for `features` (sent as little-endian float32)."""
    return {"shape": list(features.shape), "dtype": dtype,
            "base64": base64.b64encode(features.astype("<f4").tobytes()).decode()}


def entry(features, limits: Limits = Limits()) -> GroundingRequest | GroundingResult:
    return entry_from_json(json.dumps({"id": "q", "features": features, "query": "person opens the door",
                                       "duration": 30.0}), "line 3", limits=limits)


def test_binary_features_answer_as_the_same_features_as_a_list_or_a_npy_file(tmp_path):
    video = np.random.default_rng(5).standard_normal((CFG.max_pos_len + 7, CFG.visual_dim)).astype(np.float32)
    np.save(tmp_path / "v.npy", video)
    sent = entry(binary(video))
    assert isinstance(sent.features, np.ndarray) and sent.features.dtype == np.dtype("<f4")
    assert np.array_equal(sent.features, video)  # bit for bit
    engine = make_engine(backend="reference", video_cache=0)
    answers = [engine.ground([entry(f)])[0].to_json() for f in (binary(video), video.tolist(), str(tmp_path / "v.npy"))]
    assert "error" not in answers[0] and answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("features, message", [
    ({**binary(np.ones((2, 3))), "dtype": "float64"}, 'dtype must be "float32" (little-endian), got \'float64\''),
    ({**binary(np.ones((2, 3))), "dtype": ">f4"}, 'dtype must be "float32" (little-endian), got \'>f4\''),
    ({**binary(np.ones((2, 3))), "dtype": 4}, 'dtype must be "float32" (little-endian), got \'4\''),
    ({**binary(np.ones((2, 3))), "shape": [6]}, "shape must be [clips, dimension], two non-negative integers"),
    ({**binary(np.ones((2, 3))), "shape": [2, -3]}, "shape must be [clips, dimension], two non-negative integers"),
    ({**binary(np.ones((2, 3))), "shape": [2.0, 3]}, "shape must be [clips, dimension], two non-negative integers"),
    ({**binary(np.ones((2, 3))), "shape": [3, 3]}, "base64 must be the 36 bytes of a [3, 3] float32 array "
                                                   "(48 characters), got 32"),
    ({**binary(np.ones((2, 3))), "base64": ["AAAA"]}, "base64 must be the 24 bytes of a [2, 3] float32 array "
                                                      "(32 characters), got list"),
    ({**binary(np.ones((2, 3))), "base64": "A" * 31 + "!"}, "base64 is not valid base64"),
    ({**binary(np.ones((2, 3))), "base64": "AAAA\nAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "base64 is not valid base64"),
    ({**binary(np.ones((2, 3))), "base64": "é" * 32}, "base64 is not valid base64"),
    ({**binary(np.ones((2, 2))), "base64": "A" * 24}, "base64 holds 18 bytes, expected 16 for shape [2, 2]"),
    ({**binary(np.ones((2, 3))), "order": "F"}, 'binary features must be an object of exactly "shape", "dtype" '
                                                "and \"base64\" (or {\"registered\": ID}), got 'shape', 'dtype', "
                                                "'base64', 'order'"),
    ({"shape": [2, 3], "dtype": "float32"}, 'binary features must be an object of exactly "shape"'),
    ({"registered": "../x"}, "a registered video's id must be 1 to 128 of A-Z a-z 0-9 . _ - (not . or ..), got '../x'"),
    ({"registered": ".."}, "a registered video's id must be"),
    ({"registered": 7}, "a registered video's id must be 1 to 128 of A-Z a-z 0-9 . _ - (not . or ..), got int"),
    ({"registered": "v", "shape": [1, 1]}, 'binary features must be an object of exactly "shape"'),
])
def test_bad_binary_features_are_the_entrys_one_line_error(features, message):
    result = entry(features)
    assert isinstance(result, GroundingResult) and result.id == "q"
    assert result.error.startswith("line 3: ") and message in result.error and "\n" not in result.error


def test_the_engine_checks_decoded_features_as_it_checks_arrays():
    """Non-finite values, another feature size and zero clips are refused by the engine's own checks."""
    nan = np.ones((3, CFG.visual_dim), np.float32)
    nan[1, 2] = np.nan
    cases = [(binary(nan), "features: 1 NaN/inf values, first in clip 1"),
             (binary(np.ones((3, CFG.visual_dim + 1))), f"expected feature dimension {CFG.visual_dim}, got "
                                                        f"{CFG.visual_dim + 1}"),
             (binary(np.ones((0, CFG.visual_dim))), "features: has zero clips"),
             ({"registered": "v1"}, "features name the registered video 'v1': only a server keeps registered "
                                    "videos (PUT /v1/videos/ID on seqpan serve)")]
    engine = make_engine(backend="reference")
    requests = [entry(features) for features, _ in cases]
    assert isinstance(requests[-1].features, RegisteredVideo)
    errors = [r.error for r in engine.ground(requests)]
    assert all(message in error for error, (_, message) in zip(errors, cases)), errors


def test_sizes_are_checked_against_the_limits_before_anything_is_decoded(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("decoded before the sizes were checked")

    monkeypatch.setattr(features_module.base64, "b64decode", never)
    limits = Limits(max_clips=100, max_feature_bytes=4096)
    cases = [({"shape": [101, 4], "dtype": "float32", "base64": ""}, "features: 101 clips, more than the limit of 100"),
             ({"shape": [2, 10**12], "dtype": "<f4", "base64": ""},
              f"features: {8 * 10**12} bytes of features, more than the limit of 4096"),
             ({"shape": [2, 4], "dtype": "float32", "base64": "A" * 10_000},
              "base64 must be the 32 bytes of a [2, 4] float32 array (44 characters), got 10000")]
    for features, message in cases:
        result = entry(features, limits)
        assert isinstance(result, GroundingResult) and message in result.error, result


def test_request_from_json_checks_every_field(tmp_path):
    from engine import RequestError, request_from_json

    good = {"features": "v.npy", "query": "person opens the door", "duration": 3, "seed": 4, "video_id": "x",
            "id": "q", "unknown": 1}
    req = request_from_json(good, tmp_path, default_id=9)
    assert (req.features, req.duration, req.seed, req.video_id, req.id) == (tmp_path / "v.npy", 3.0, 4, "x", "q")
    assert request_from_json({**good, "features": "/abs/v.npy"}, tmp_path).features.as_posix() == "/abs/v.npy"
    assert request_from_json({k: v for k, v in good.items() if k != "id"}, None, default_id=9).id == 9
    assert request_from_json({**good, "features": [[0.5] * 3]}, None).features == [[0.5] * 3]
    for change, message in [(dict(features=3), "features must be"), (dict(query=["a"]), "query must be a string"),
                            (dict(duration="3"), "duration must be a number"), (dict(duration=True), "duration"),
                            (dict(seed=1.5), "seed must be an integer"), (dict(id={"a": 1}), "id must be"),
                            (dict(video_id=1.5), "video_id must be")]:
        with pytest.raises(RequestError, match=message):
            request_from_json({**good, **change}, tmp_path)
    with pytest.raises(RequestError, match="missing duration"):
        request_from_json({"features": "v.npy", "query": "q"}, tmp_path)
    with pytest.raises(RequestError, match="expected a JSON object, got list"):
        request_from_json([good], tmp_path)


def test_request_from_json_features_win_over_video_and_limits_apply(tmp_path):
    from engine import Limits, RequestError, request_from_json

    both = {"features": [[0.5] * 3], "video": "a.mp4", "query": "door", "duration": 3, "id": 1.5}
    req = request_from_json(both, tmp_path)
    assert (req.features, req.video, req.id) == ([[0.5] * 3], None, 1.5)  # a float id is an id too
    tight = Limits(max_query_chars=4, max_duration=2.0)
    with pytest.raises(RequestError, match="limit of 4"):
        request_from_json({**both, "query": "doors"}, tmp_path, limits=tight)
    with pytest.raises(RequestError, match="limit of 2 s"):
        request_from_json({**both, "query": "door"}, tmp_path, limits=tight)


def test_request_from_json_reads_video_requests(tmp_path):
    from engine import request_from_json

    req = request_from_json({"video": "a.mp4", "query": "door", "id": 3}, tmp_path)
    assert (req.video, req.features, req.duration, req.id) == (tmp_path / "a.mp4", None, None, 3)
    assert request_from_json({"video": "a.mp4", "query": "door", "duration": 4}, None).duration == 4.0


def test_results_are_written_without_nan():
    """dumps_result writes strict JSON: a non-finite number as null (the engine turns a non-finite
    answer into an error before that)."""
    from engine.wire import dumps_result
    from engine.requests import GroundingResult

    assert json.loads(dumps_result(GroundingResult("a", 1.0, 2.0, 0, 1, 0.5))) == {
        "id": "a", "start": 1.0, "end": 2.0, "start_index": 0, "end_index": 1, "score": 0.5}
    line = dumps_result(GroundingResult("a", 1.0, float("inf"), 0, 1, float("nan")))
    assert json.loads(line)["score"] is None and json.loads(line)["end"] is None and "NaN" not in line


def test_json_requests_carry_top_k_and_nms():
    from engine.wire import request_from_json

    base = {"features": [[0.0] * CFG.visual_dim], "query": "door", "duration": 3}
    plain = request_from_json(base)
    assert (plain.top_k, plain.nms) == (1, None)
    asked = request_from_json({**base, "top_k": 7, "nms": 0.25})
    assert (asked.top_k, asked.nms) == (7, 0.25)
    for field, value, message in (("top_k", 0, "top_k must be an integer of at least 1, got 0"),
                                  ("top_k", True, "top_k must be an integer"), ("top_k", "3", "top_k must be"),
                                  ("top_k", 2.0, "top_k must be"), ("top_k", 101, "more than the limit of 100"),
                                  ("nms", 1.5, "nms must be an IoU between 0 and 1"), ("nms", "0.5", "nms must be"),
                                  ("nms", False, "nms must be")):
        with pytest.raises(RequestError, match=message):
            request_from_json({**base, field: value})


@pytest.mark.parametrize("check, value, message", [
    ("check_id", {"a": 1}, "id must be a string, a number or null, got dict"),
    ("parse_json", "[" * 100_000, "JSON nested too deeply"),
])
def test_each_check_says_exactly_what_is_wrong(check, value, message):
    """The whole one-line message of each of the wire's own checks (those of the fields:
    tests/engine/test_prepare.py)."""
    import engine.wire

    with pytest.raises(RequestError) as err:
        getattr(engine.wire, check)(value)
    assert str(err.value) == message


def test_request_errors_name_what_is_missing_or_malformed(tmp_path):
    from engine import request_from_json

    for obj, message in [({"query": "door"}, "missing features, duration"),
                         ({"features": 3, "query": "door", "duration": 3},
                          'features must be a path to a .npy file, a [T, D] list of numbers, {"shape", "dtype", '
                          '"base64"} or {"registered": ID}')]:
        with pytest.raises(RequestError) as err:
            request_from_json(obj, tmp_path)
        assert str(err.value) == message
