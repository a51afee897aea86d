"""Training labels against hand-computed cases of the original data loader's rule."""
from __future__ import annotations

import numpy as np
import pytest

from engine.data.labels import batch_labels, boundary_labels, match_labels

F = 1e-10


def side(length: int) -> float:
    """The neighbours' share, (1 - L*1e-10 - 0.5) / 2."""
    return (1 - length * F - 0.5) / 2


def test_interior_boundaries_split_between_neighbours():
    y = side(5)
    np.testing.assert_allclose(boundary_labels(2, 5, 7), [F, y, 0.5 + F, y, F, 0, 0], rtol=1e-7, atol=0)
    np.testing.assert_allclose(boundary_labels(3, 5, 7), [F, F, y, 0.5 + F, y, 0, 0], rtol=1e-7, atol=0)


def test_boundaries_at_the_ends_fold_the_missing_neighbour_back():
    y = side(5)
    np.testing.assert_allclose(boundary_labels(0, 5, 5), [0.5 + F + y, y, F, F, F], rtol=1e-7, atol=0)
    np.testing.assert_allclose(boundary_labels(4, 5, 6), [F, F, F, y, 0.5 + F + y, 0], rtol=1e-7, atol=0)
    y1 = side(1)
    np.testing.assert_allclose(boundary_labels(0, 1, 3), [0.5 + F + 2 * y1, 0, 0], rtol=1e-7, atol=0)


def test_boundary_labels_are_a_distribution_over_valid_clips():
    for length in (1, 2, 7, 64):
        for index in {0, length // 2, length - 1}:
            labels = boundary_labels(index, length, length + 3)
            assert labels.dtype == np.float32
            assert abs(float(labels.sum(dtype=np.float64)) - 1.0) < 1e-6
            assert not labels[length:].any()


@pytest.mark.parametrize("start,end,length,expected", [
    (2, 7, 10, [0, 1, 1, 1, 2, 2, 3, 3, 3, 0]),  # B-M, I-M, E-M with one clip of margin each side
    (0, 4, 5, [1, 1, 2, 3, 3]),  # margins clipped at both ends
    (2, 3, 5, [0, 1, 3, 3, 3]),  # overlapping margins: st_r = max(st, et_l - 1), E-M written last
    (4, 5, 10, [0, 0, 0, 1, 3, 3, 3, 0, 0, 0]),
    (3, 3, 8, [0, 0, 3, 3, 3, 0, 0, 0]),  # a one-clip moment is all E-M
    (0, 0, 1, [3]),
])
def test_match_labels(start, end, length, expected):
    np.testing.assert_array_equal(match_labels(start, end, length, length), expected)


def test_batch_labels_pad_to_the_longest_video():
    s, e, m = batch_labels([1, 0], [2, 0], [4, 2])
    y4, y2 = side(4), side(2)
    np.testing.assert_allclose(s, [[y4, 0.5 + F, y4, F], [0.5 + F + y2, y2, 0, 0]], rtol=1e-7, atol=0)
    np.testing.assert_allclose(e, [[F, y4, 0.5 + F, y4], [0.5 + F + y2, y2, 0, 0]], rtol=1e-7, atol=0)
    np.testing.assert_array_equal(m, [[1, 3, 3, 3], [3, 3, 0, 0]])
    assert m.dtype == np.int32 and s.dtype == np.float32


def test_batch_labels_reject_spans_outside_the_video():
    with pytest.raises(ValueError, match="does not lie"):
        batch_labels([3], [5], [5])
