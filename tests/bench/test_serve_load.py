"""The load test's arithmetic, by hand."""
from __future__ import annotations

import pytest

from bench.serve_load import bodies_of, summarize


def test_summarize_counts_over_the_span_of_the_answered_calls():
    # (end s, latency ms, queries, status): 5 answered calls ending over 2 s, one refused
    calls = [(10.0, 4.0, 1, 200), (10.5, 2.0, 1, 200), (11.0, 8.0, 16, 200), (11.5, 6.0, 1, 200),
             (12.0, 10.0, 1, 200), (12.0, 1.0, 1, 503)]
    row = summarize(calls, direct_qps=19.0)
    assert row["calls"] == 6 and row["failed"] == 1
    assert row["requests_per_s"] == pytest.approx(4 / 2.0)  # 4 calls end after the first, in 2 s
    assert row["queries_per_s"] == pytest.approx(19 / 2.0) and row["efficiency"] == pytest.approx(0.5)
    assert row["p50_ms"] == 6.0 and row["p99_over_p50"] == pytest.approx(row["p99_ms"] / 6.0)
    assert 8.0 < row["p99_ms"] <= 10.0


def test_bodies_of_groups_consecutive_requests_and_drops_a_short_tail():
    objects = [{"id": i} for i in range(7)]
    assert bodies_of(objects, 1) == [{"requests": [o]} for o in objects]
    assert bodies_of(objects, 3) == [{"requests": objects[0:3]}, {"requests": objects[3:6]}]
