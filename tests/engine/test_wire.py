"""The wire protocol's entry reader and the merge of answers back into input order (engine.wire),
which the CLI's requests files and the server's bodies share."""
from engine.requests import GroundingRequest, GroundingResult
from engine.wire import entry_from_json, in_input_order


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
