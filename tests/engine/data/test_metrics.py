"""engine.data.metrics: the original's temporal IoU, R@1 at IoU thresholds and mIoU."""
from __future__ import annotations

import pytest

from engine.data.metrics import iou, score_moments


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ((0.0, 10.0), (0.0, 10.0), 1.0),
        ((0.0, 10.0), (5.0, 15.0), 5 / 15),
        ((2.0, 4.0), (0.0, 10.0), 0.2),
        ((0.0, 1.0), (2.0, 3.0), 0.0),  # apart: negative intersection clipped to 0
        ((0.0, 1.0), (1.0, 2.0), 0.0),  # touching
        ((5.0, 5.0), (0.0, 10.0), 0.0),  # zero-length prediction
        ((0.0, 10.0), (4.0, 4.0), 0.0),  # zero-length ground truth
        ((6.0, 4.0), (0.0, 10.0), 0.0),  # reversed prediction: (4 - 6) / 10 clipped
        ((1.0, 6.0), (6.0, 1.0), 0.0),  # reversed ground truth
        ((5.0, 5.0), (5.0, 5.0), 0.0),  # zero union, where the original divides by zero
        ((5.0, 1.0), (4.0, 2.0), 0.0),  # both reversed: union 2 - 4 < 0
    ],
)
def test_iou(pred, gt, expected):
    assert iou(pred, gt) == pytest.approx(expected, abs=1e-15)


def test_iou_is_symmetric():
    assert iou((1.0, 7.0), (3.0, 12.0)) == iou((3.0, 12.0), (1.0, 7.0)) == pytest.approx(4 / 11)


def test_evaluate_counts_thresholds_inclusively():
    gts = [(0.0, 10.0)] * 5
    preds = [(0.0, 10.0), (0.0, 7.0), (0.0, 5.0), (0.0, 3.0), (20.0, 30.0)]  # IoU 1, .7, .5, .3, 0
    scores = score_moments(preds, gts)
    assert set(scores) == {"r1_iou03", "r1_iou05", "r1_iou07", "miou"}
    assert scores["r1_iou03"] == pytest.approx(4 / 5)
    assert scores["r1_iou05"] == pytest.approx(3 / 5)
    assert scores["r1_iou07"] == pytest.approx(2 / 5)
    assert scores["miou"] == pytest.approx(2.5 / 5)


def test_evaluate_single_sample():
    assert score_moments([(2.0, 4.0)], [(0.0, 10.0)]) == {
        "r1_iou03": 0.0, "r1_iou05": 0.0, "r1_iou07": 0.0, "miou": pytest.approx(0.2)
    }


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1 ground truths"):
        score_moments([(0.0, 1.0), (0.0, 1.0)], [(0.0, 1.0)])
    with pytest.raises(ValueError, match="no predictions"):
        score_moments([], [])
