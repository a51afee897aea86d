"""What a caller asks and gets (engine.requests): a result's JSON form is always valid JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine import GroundingRequest
from tests.engine.test_engine import CFG, make_engine
from tests.helpers import Text

FEATS = np.random.default_rng(0).standard_normal((12, CFG.visual_dim)).astype(np.float32)


@pytest.mark.parametrize("rid, expected", [(float("nan"), None), (float("inf"), None), (np.float32(2.5), 2.5),
                                           (np.int64(7), 7), (("v", 1), ["v", 1]), (b"x", "b'x'")])
def test_issue11_6_to_json_is_always_valid_json(rid, expected):
    """Issue #11 (6): an id (or any number) that is not JSON is written as valid JSON."""
    from engine.wire import dumps_result

    result = make_engine().ground([GroundingRequest(FEATS, "person opens the door", 10.0, id=rid)])[0]
    assert result.id is rid  # the caller's own object is kept on the result
    assert json.loads(dumps_result(result))["id"] == expected


def test_json_value_converts_eight_levels_and_bounded_integers():
    """By hand: lists, tuples and dicts are converted 8 levels deep (a 9th level is its text), keys
    too; integers of up to 10,000 bits are kept, booleans stay booleans; a str subclass becomes a plain
    str."""
    from engine.requests import json_value

    def nested(levels, inner):
        return inner if levels == 0 else [nested(levels - 1, inner)]

    assert json_value(nested(8, 1)) == nested(8, 1)
    assert json_value(nested(9, 1)) == nested(8, "[1]")
    assert json_value(nested(6, {("a",): (1,)})) == nested(6, {"['a']": [1]})
    assert json_value(nested(7, {("a",): (1,)})) == nested(7, {"('a',)": "(1,)"})
    assert json_value(nested(8, {"a": 1})) == nested(8, "{'a': 1}")
    assert json_value(2**10_000 - 1) == 2**10_000 - 1 and json_value(2**10_000) is None
    assert json_value(True) is True and json_value(np.bool_(False)) is False  # not the integers 1 and 0

    assert type(json_value(Text("x"))) is str and json_value(Text("x")) == "x"
