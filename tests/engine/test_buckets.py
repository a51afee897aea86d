"""Bucketing rules, against values worked out by hand from their documentation: clips to a power of
two of at least 16 (capped at max_pos_len), words to a power of two of at least 16 (capped), chars to a
power of two of at least 8, CUDA-graph batches to a power of two; batches in order of first appearance, one video's
queries together, cut at max_batch; word buckets up to twice apart merged."""
from __future__ import annotations

import pytest

from engine.buckets import (Shape, batch_bucket, char_bucket, clip_bucket, length_buckets, merged_shapes,
                             plan_batches, word_bucket)


@pytest.mark.parametrize("clips, max_pos_len, bucket", [
    (1, 128, 16), (15, 128, 16), (16, 128, 16), (17, 128, 32), (33, 128, 64), (64, 128, 64), (65, 128, 128),
    (120, 128, 128), (129, 256, 256), (65, 100, 100), (100, 100, 100), (33, 40, 40), (40, 40, 40),
])
def test_clip_bucket(clips, max_pos_len, bucket):
    assert clip_bucket(clips, max_pos_len) == bucket


@pytest.mark.parametrize("words, max_pos_len, bucket", [
    (1, 128, 16), (8, 128, 16), (9, 128, 16), (16, 128, 16), (17, 128, 32), (33, 128, 64),
    (65, 128, 128), (40, 48, 48), (300, 128, 128), (5, 8, 8),
])
def test_word_bucket(words, max_pos_len, bucket):
    assert word_bucket(words, max_pos_len) == bucket


@pytest.mark.parametrize("width, bucket", [(1, 8), (3, 8), (4, 8), (8, 8), (9, 16), (16, 16), (17, 32), (33, 64),
                                           (65, 128)])
def test_char_bucket(width, bucket):
    assert char_bucket(width) == bucket


@pytest.mark.parametrize("size, bucket", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (63, 64), (64, 64), (65, 128)])
def test_batch_bucket(size, bucket):
    assert batch_bucket(size) == bucket


@pytest.mark.parametrize("max_pos_len, buckets", [
    (32, (32,)), (64, (64,)), (65, (64, 65)), (100, (64, 100)), (128, (64, 100, 128)), (300, (64, 100, 256, 300)),
])
def test_length_buckets(max_pos_len, buckets):
    assert length_buckets(max_pos_len) == buckets


def test_plan_keeps_shapes_apart_videos_together_order_and_max_batch():
    a, b = Shape(16, 8, 8), Shape(32, 8, 8)
    keys = [(a, "v1"), (b, "v2"), (a, "v3"), (a, "v1"), (b, "v2"), (a, "v1"), (a, "v3")]
    assert plan_batches(keys, max_batch=3) == [(a, [0, 3, 5]), (a, [2, 6]), (b, [1, 4])]
    assert plan_batches(keys, max_batch=2) == [(a, [0, 3]), (a, [5, 2]), (a, [6]), (b, [1, 4])]
    assert plan_batches(keys, max_batch=100) == [(a, [0, 3, 5, 2, 6]), (b, [1, 4])]
    assert plan_batches([], max_batch=4) == []


def test_word_buckets_up_to_twice_apart_run_together_at_the_largest_words_and_chars():
    """By hand: at 64 clips, 8 and 16 words share a batch (at 16 words and the widest chars), 32 and
    64 another; 128 words is more than twice 32, so it runs alone; another clip count never joins."""
    s8, s16 = Shape(64, 8, 16), Shape(64, 16, 8)
    s32, s64, s128 = Shape(64, 32, 8), Shape(64, 64, 24), Shape(64, 128, 8)
    other = Shape(100, 16, 8)
    assert merged_shapes([s16, s8, s32, s64, s128, other, s8]) == {
        s8: Shape(64, 16, 16), s16: Shape(64, 16, 16), s32: Shape(64, 64, 24), s64: Shape(64, 64, 24),
        s128: s128, other: other}
    keys = [(s8, "v1"), (other, "v2"), (s16, "v1"), (s128, "v3"), (s8, "v4")]
    assert plan_batches(keys, max_batch=8) == [(Shape(64, 16, 16), [0, 2, 4]), (other, [1]), (s128, [3])]
