"""engine.shape_plan: the shapes each stage compiles, worked out by hand from the bucket rules, and the
chunks a batch runs in (every batch size up to max_batch covered, at the least estimated cost)."""
from __future__ import annotations

import itertools

import pytest

from engine.shape_plan import CALL_COST_ROWS, ShapePlan
from reference.config import preset


def plan_for(dataset: str, max_batch: int = 64, max_word_chars: int = 64, **overrides) -> ShapePlan:
    return ShapePlan.of(preset(dataset, 100, 50, **overrides), max_batch, max_word_chars)


def test_buckets_of_the_presets_by_hand():
    charades = plan_for("charades")  # 64 clips
    assert charades.clips == (16, 32, 64) and charades.words == (16, 32, 64)
    assert charades.chars == (8, 16, 32, 64) and charades.batches == (1, 4, 16, 64)
    assert len(charades) == 3 + 3 * 4 + 4 * 3 * 3 == 51
    activitynet = plan_for("activitynet")  # 100 clips: powers of two, then the cap
    assert activitynet.clips == (16, 32, 64, 100) and activitynet.words == (16, 32, 64, 100)
    assert len(activitynet) == 4 + 4 * 4 + 4 * 4 * 4 == 84
    tacos = plan_for("tacos")
    assert tacos.clips == (16, 32, 64, 128, 256) and tacos.words == (16, 32, 64, 128, 256)
    assert len(tacos) == 5 + 5 * 4 + 4 * 5 * 5 == 125


def test_the_demo_checkpoints_plan_has_26_shapes():
    """The demo model (32 clips) served with max_batch 64: 2 video + 2x4 query + 4x2x2 cross shapes."""
    plan = plan_for("charades", max_pos_len=32)
    assert plan.video_shapes() == [(1, 16), (1, 32)]
    assert plan.query_shapes() == [(1, m, w) for m in (16, 32) for w in (8, 16, 32, 64)]
    assert plan.cross_shapes() == [(b, n, m) for b in (1, 4, 16, 64) for n in (16, 32) for m in (16, 32)]
    assert len(plan) == 2 + 8 + 16 == 26


@pytest.mark.parametrize("max_batch, batches", [(1, (1,)), (2, (1, 2)), (4, (1, 4)), (5, (1, 4, 5)),
                                                (16, (1, 4, 16)), (100, (1, 4, 16, 64, 100))])
def test_batch_sizes_are_powers_of_four_and_max_batch(max_batch, batches):
    assert plan_for("charades", max_batch).batches == batches


def test_char_buckets_stop_at_the_word_limit():
    assert plan_for("charades", max_word_chars=10).chars == (8, 16)
    assert plan_for("charades", max_word_chars=65).chars == (8, 16, 32, 64, 128)


@pytest.mark.parametrize("count, chunks", [
    (1, [1]), (2, [1, 1]), (3, [4]), (4, [4]), (5, [4, 1]), (7, [4, 4]), (12, [4, 4, 4]), (13, [4, 4, 4, 1]),
    (14, [16]), (16, [16]), (17, [16, 1]), (33, [16, 16, 1]), (63, [64]), (64, [64])])
def test_chunks_by_hand(count, chunks):
    """Cost = rows + 0.5 a call; e.g. 2 queries: 1+1 costs 3, one chunk of 4 costs 4.5; 3 queries: 1+1+1
    and 4 both cost 4.5 (fewer calls win); 14: 4+4+4+1+1 costs 16.5, 16 costs 16.5."""
    assert CALL_COST_ROWS == 0.5
    assert plan_for("charades").chunks(count) == chunks


def test_chunks_cover_every_count_at_the_least_cost_of_any_combination():
    plan = plan_for("charades", max_batch=20)  # sizes 1, 4, 16, 20
    for count in range(1, 21):
        chunks = plan.chunks(count)
        assert sum(chunks) >= count and all(c in plan.batches for c in chunks)
        assert sum(chunks) - min(chunks) < count  # no chunk is pure padding
        cost = sum(chunks) + CALL_COST_ROWS * len(chunks)
        best = min(sum(c) + CALL_COST_ROWS * len(c) for k in range(1, count + 1)
                   for c in itertools.combinations_with_replacement(plan.batches, k) if sum(c) >= count)
        assert cost == best


@pytest.mark.parametrize("count", [0, 65])
def test_chunks_outside_the_plan_are_refused(count):
    with pytest.raises(ValueError, match="outside the plan"):
        plan_for("charades").chunks(count)
