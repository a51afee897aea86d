"""engine.serve.parsing reads a body's outline without parsing it: on any valid JSON body it finds
the same entries that parsing the whole body finds (strings holding brackets, quotes and escapes,
nested values, fields other than `requests`, any spacing), and refuses too many entries."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import RequestError
from engine.limits import Limits
from engine.wire import json_error_id, request_from_json
from engine.requests import GroundingRequest
from engine.serve.parsing import BodyTooLarge, parse_body
from tests.helpers import fuzz_settings

TRICKY = st.text(alphabet='[]{}",:\\ \t\n\u00e9\u2028x0', max_size=8)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | TRICKY, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
                    max_leaves=12)
ENTRY = st.fixed_dictionaries({"features": st.just([[0.5, 1.5]]), "query": TRICKY | st.just("opens the door"),
                               "duration": st.just(3.0)}, optional={"id": JSON, "video_id": TRICKY, "x": JSON})


def expected_entries(obj: dict) -> list[tuple]:
    """What parsing the whole body and reading each entry gives: (kind, id, error or query)."""
    out = []
    for index, item in enumerate(obj["requests"]):
        try:
            request = request_from_json(item, None, default_id=index)
            out.append(("request", request.id, request.query))
        except RequestError as err:
            out.append(("error", json_error_id(item), f"requests[{index}]: {err}"))
    return out


def got_entries(entries) -> list[tuple]:
    return [("request", e.id, e.query) if isinstance(e, GroundingRequest) else ("error", e.id, e.error)
            for e in entries]


@fuzz_settings(200)
@given(requests=st.lists(ENTRY | JSON, max_size=6), others=st.dictionaries(TRICKY, JSON, max_size=3),
       indent=st.sampled_from([None, 0, 2]), ensure_ascii=st.booleans())
def test_the_outline_finds_the_entries_that_parsing_finds(requests, others, indent, ensure_ascii):
    obj = {**{k: v for k, v in others.items() if k != "requests"}, "requests": requests}
    body = json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii).encode()
    assert got_entries(parse_body(body, Limits(), max_entries=6)) == expected_entries(obj)


@pytest.mark.parametrize("count", [0, 3, 4])
def test_entries_past_the_limit_are_refused_before_they_are_read(count):
    body = json.dumps({"requests": [{"a": 1}] * count}).encode()
    if count <= 3:
        assert len(parse_body(body, Limits(), max_entries=3)) == count
    else:
        with pytest.raises(BodyTooLarge, match="more than 3 requests"):
            parse_body(body + b"not even JSON after the excess", Limits(), max_entries=3)
