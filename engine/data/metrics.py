"""Moment-retrieval metrics of the original SeqPAN evaluation (R@1 at IoU thresholds, mIoU)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS = {"r1_iou03": 0.3, "r1_iou05": 0.5, "r1_iou07": 0.7}


def iou(pred: tuple[float, float], gt: tuple[float, float]) -> float:
    """Temporal IoU of two (start, end) moments, as the original's ``calculate_iou``.

    ``(min(ends) - max(starts)) / (max(ends) - min(starts))``, clipped below at 0. Where the
    original would divide by a zero (or negative) union, which needs both moments empty or
    reversed, this returns 0.0.
    """
    inter = min(pred[1], gt[1]) - max(pred[0], gt[0])
    union = max(pred[1], gt[1]) - min(pred[0], gt[0])
    if union <= 0:
        return 0.0
    return max(0.0, inter / union)


def score_moments(
    preds: Sequence[tuple[float, float]], gts: Sequence[tuple[float, float]]
) -> dict[str, float]:
    """R@1 at IoU >= 0.3/0.5/0.7 and mean IoU of predicted vs ground-truth moments.

    Values are fractions in [0, 1]; the original reports the same numbers multiplied by 100.
    Keys: ``r1_iou03``, ``r1_iou05``, ``r1_iou07``, ``miou``.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    if not preds:
        raise ValueError("no predictions to evaluate")
    ious = [iou(p, g) for p, g in zip(preds, gts, strict=True)]
    scores = {key: sum(v >= t for v in ious) / len(ious) for key, t in THRESHOLDS.items()}
    scores["miou"] = float(np.mean(ious))
    return scores
