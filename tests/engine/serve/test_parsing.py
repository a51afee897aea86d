"""engine/serve/parsing.py on bodies that are not what it reads, each with the error and the byte
position worked out by hand; the bound on arrays, objects and strings at its boundary; entries
whose own JSON is bad, or whose id cannot be written back."""
from __future__ import annotations

import codecs
import json

import pytest

from engine.limits import Limits
from engine.requests import GroundingRequest, GroundingResult
from engine.serve.parsing import BodyError, BodyTooLarge, parse_body

ENTRY = b'{"features": [[0.5, 1.5]], "query": "opens the door", "duration": 3.0}'
NOT_AN_OBJECT = 'body must be a JSON object {"requests": [...]}'


def parse(body: bytes, max_entries: int = 4, limits: Limits = Limits()):
    return parse_body(body, limits, max_entries)


def body_error(body: bytes) -> str:
    with pytest.raises(BodyError) as info:
        parse(body)
    return str(info.value)


@pytest.mark.parametrize("body, message", [
    (b"", NOT_AN_OBJECT), (b"  ", NOT_AN_OBJECT), (b"[]", NOT_AN_OBJECT), (b"{}", NOT_AN_OBJECT),
    (b'{"x": 1}', NOT_AN_OBJECT), (b'{"requests": {}}', NOT_AN_OBJECT), (b'{"requests": 1}', NOT_AN_OBJECT),
    (b'{"requests": null}', NOT_AN_OBJECT), (b'"requests"', NOT_AN_OBJECT),
    (b'{"requests": [], "requests": []}', 'body: "requests" is given twice'),
    (b'{"requests": [],}', "body: not valid JSON: a comma before '}' at byte 16"),
    (b'{"requests": [] , }', "body: not valid JSON: a comma before '}' at byte 18"),
    (b'{"requests": [] "x": 1}', "body: not valid JSON: expected ',' or '}' at byte 16"),
    (b'{"requests": []', "body: not valid JSON: expected ',' or '}' at byte 15"),
    (b'{"requests": []} x', "body: not valid JSON: extra data after the object at byte 16"),
    (b'{"requests": []}x', "body: not valid JSON: extra data after the object at byte 16"),
    (b'{"requests": []}{}', "body: not valid JSON: extra data after the object at byte 16"),
    (b"{requests: []}", "body: not valid JSON: expected a quoted key at byte 1"),
    (b'{"requests": [], x: 1}', "body: not valid JSON: expected a quoted key at byte 17"),
    (b'{"requests" []}', "body: not valid JSON: expected ':' at byte 12"),
    (b'{"requests": [1 2]}', "body: not valid JSON: expected ',' or ']' after requests[0]"),
    (b'{"requests": [1, 2 3]}', "body: not valid JSON: expected ',' or ']' after requests[1]"),
    (b'{"requests": [1,]}', "body: not valid JSON: expected a value at byte 16"),
    (b'{"requests": [,1]}', "body: not valid JSON: expected a value at byte 14"),
    (b'{"x": , "requests": []}', "body: not valid JSON: expected a value at byte 6"),
    (b'{"requests": ["abc]}', "body: not valid JSON: unterminated string at byte 14"),
    (b'{"requests": [{"a": "x]}]}', "body: not valid JSON: unterminated string at byte 20"),
    (b'{"requests": [[1, [2]', "body: not valid JSON: a bracket is never closed"),
    (b'{"x": {"requests": [1]', "body: not valid JSON: a bracket is never closed"),
    (b'{"x": {"requests": [1]}', "body: not valid JSON: expected ',' or '}' at byte 23"),
])
def test_bodies_that_are_not_an_object_with_a_requests_list(body, message):
    assert body_error(body) == message


def test_a_key_that_is_not_valid_json_text():
    assert body_error(b'{"\\x": 1, "requests": []}').startswith("body: a key is ")


def test_spacing_a_byte_order_mark_and_other_members():
    assert parse(b' \t\r\n{ "requests" :\n[ ] , "x" : {"y": ["]"]} }\n ') == []
    assert parse(codecs.BOM_UTF8 + b'{"requests": []}') == []
    assert body_error(b" " + codecs.BOM_UTF8 + b'{"requests": []}') == NOT_AN_OBJECT
    assert body_error(codecs.BOM_UTF8 * 2 + b'{"requests": []}') == NOT_AN_OBJECT
    got = parse(b'{"x": [1, {"a": "}"}], "requests": [' + ENTRY + b', ' + ENTRY + b'], "y": null}')
    assert [(type(r), r.id, r.query) for r in got] == [(GroundingRequest, 0, "opens the door"),
                                                       (GroundingRequest, 1, "opens the door")]


def test_each_entry_is_read_alone():
    got = parse(b'{"requests": [' + ENTRY + b', 7, {"query": NaN}, "x", ' + ENTRY[:-1] + b', "id": "z"}]}',
                max_entries=5)
    assert isinstance(got[0], GroundingRequest) and got[0].id == 0
    assert [type(r) for r in got[1:4]] == [GroundingResult] * 3
    assert [r.error.split(":")[0] for r in got[1:4]] == ["requests[1]", "requests[2]", "requests[3]"]
    assert isinstance(got[4], GroundingRequest) and got[4].id == "z"


def test_an_id_too_long_to_write_back_is_that_entrys_error():
    long_id = b"9" * 4000  # about 13,300 bits: parsed, but past json_value's 10,000
    got = parse(b'{"requests": [' + ENTRY[:-1] + b', "id": ' + long_id + b'}, ' + ENTRY + b']}')
    assert isinstance(got[0], GroundingResult) and got[0].id is None
    assert got[0].error == "requests[0]: id is an integer too long to be written back; send it as a string"
    assert isinstance(got[1], GroundingRequest) and got[1].id == 1
    ok = parse(b'{"requests": [' + ENTRY[:-1] + b', "id": ' + b"9" * 3000 + b'}]}')[0]
    assert isinstance(ok, GroundingRequest) and ok.id == int("9" * 3000)


def nested_strings(count: int) -> bytes:
    """One entry: an array (1 part) of `count` strings (1 part each)."""
    return b'{"requests": [[' + b", ".join([b'"s"'] * count) + b"]]}"


def test_arrays_objects_and_strings_are_bounded_by_clips_and_entries():
    limits = Limits(max_clips=1)  # 1 + 64 x 1 entry = 65 parts in all
    assert len(parse(nested_strings(64), max_entries=1, limits=limits)) == 1
    with pytest.raises(BodyTooLarge) as info:
        parse(nested_strings(65), max_entries=1, limits=limits)
    assert str(info.value) == "more arrays, objects and strings in one body than its requests can use"
    assert len(parse(nested_strings(128), max_entries=2, limits=limits)) == 1  # 1 + 64 x 2 = 129 parts
    with pytest.raises(BodyTooLarge):
        parse(nested_strings(129), max_entries=2, limits=limits)
    # other members count too, objects as one part each, closing brackets and numbers as none
    other = b'{"x": [' + b", ".join([b"{}"] * 60) + b'], "requests": [[1, 2, 3, "a", "b"]]}'
    assert len(parse(other, max_entries=1, limits=limits)) == 1  # 61 + 1 + 2 = 64
    with pytest.raises(BodyTooLarge):
        parse(other.replace(b'"b"', b'"b", "c", "d"'), max_entries=1, limits=limits)  # 66


def test_entries_up_to_the_limit_and_not_one_more():
    body = b'{"requests": [' + b", ".join([ENTRY] * 4) + b"]}"
    assert len(parse(body, max_entries=4)) == 4
    with pytest.raises(BodyTooLarge) as info:
        parse(body, max_entries=3)
    assert str(info.value) == "more than 3 requests in one body; at most 3"
    assert json.loads(body)  # the body itself is valid JSON


def test_compact_json_without_spaces():
    got = parse(b'{"x":1,"requests":[' + ENTRY.replace(b": ", b":").replace(b", ", b",") + b'],"y":{}}')
    assert len(got) == 1 and isinstance(got[0], GroundingRequest) and got[0].query == "opens the door"


def test_entries_are_read_with_the_engines_limits():
    got = parse(b'{"requests": [' + ENTRY + b"]}", limits=Limits(max_query_chars=5))
    assert isinstance(got[0], GroundingResult)
    assert got[0].error == "requests[0]: query has 14 characters, more than the limit of 5"
