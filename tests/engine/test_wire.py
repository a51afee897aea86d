"""The wire protocol (engine.wire): a request from its JSON object, the entry reader and the merge of
answers back into input order, which the CLI's requests files and the server's bodies share, and
results written as strict JSON."""
import json

import pytest

from engine import RequestError
from engine.requests import GroundingRequest, GroundingResult
from engine.wire import entry_from_json, in_input_order
from tests.engine.test_engine import CFG


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
                         ({"features": 3, "query": "door", "duration": 3}, "features must be a path to a .npy file "
                                                                           "or a [T, D] list of numbers")]:
        with pytest.raises(RequestError) as err:
            request_from_json(obj, tmp_path)
        assert str(err.value) == message
