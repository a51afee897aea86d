"""Top-k moments through the engine: K=1 is exactly today's answer (the reference decoding), and the
other moments are the next spans of the reference's own logits for the request alone."""
from __future__ import annotations

import dataclasses

import pytest

from engine.spans import top_spans
from tests.engine.test_engine import make_engine, random_requests, reference_alone, reference_output


@pytest.mark.parametrize("top_k, nms", [(4, None), (4, 0.3), (2, None)])
def test_top_k_moments(top_k, nms):
    requests = random_requests(10, seed=4)
    engine = make_engine(max_batch=4)
    plain = engine.ground(requests)
    ranked = engine.ground([dataclasses.replace(r, top_k=top_k, nms=nms) for r in requests])
    for request, one, many in zip(requests, plain, ranked):
        s, e, _, _ = reference_alone(request)
        assert (one.start_index, one.end_index) == (s, e) and one.moments is None
        assert {k: v for k, v in many.to_json().items() if k != "moments"} == one.to_json()
        first = many.moments[0]
        assert (first["start_index"], first["end_index"], first["score"]) == (s, e, one.score)
        out = reference_output(request)
        expected = top_spans(out.start_logits[0], out.end_logits[0], top_k, nms, first=(s, e))
        assert [(m["start_index"], m["end_index"]) for m in many.moments] == [(a, b) for a, b, _ in expected]
        assert [m["score"] for m in many.moments[1:]] == pytest.approx([p for _, _, p in expected[1:]], rel=1e-4)
        assert all(m["start"] <= m["end"] for m in many.moments)


def test_bad_top_k_and_nms_are_request_errors():
    request = random_requests(1, seed=1)[0]
    results = make_engine().ground([dataclasses.replace(request, top_k=0), dataclasses.replace(request, nms=1.5),
                                    dataclasses.replace(request, top_k=True)])
    assert ["top_k" in results[0].error, "nms" in results[1].error, "top_k" in results[2].error] == [True] * 3
