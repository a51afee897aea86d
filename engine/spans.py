"""Top-k moments: the K most probable spans (start ≤ end) by p_start(i)·p_end(j), optionally with
temporal non-maximum suppression. This extends the paper's decoding, which returns one span."""
from __future__ import annotations

import torch


def temporal_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two inclusive clip-index spans."""
    inter = max(0, min(a[1], b[1]) + 1 - max(a[0], b[0]))
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def top_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, k: int, nms_iou: float | None = None,
              first: tuple[int, int] | None = None) -> list[tuple[int, int, float]]:
    """Up to k (start, end, p_start·p_end) over the valid positions of one sample's [N] logits, most
    probable first (ties: lower start, then lower end). With `nms_iou`, a span overlapping a kept one
    by more than that IoU is skipped. `first`, when given, is put first whatever its rank (the
    engine passes the paper's decoded span, so K=1 is exactly the paper's answer)."""
    p_start = torch.softmax(start_logits.float(), dim=0)
    p_end = torch.softmax(end_logits.float(), dim=0)
    joint = torch.triu(p_start[:, None] * p_end[None, :])
    n = joint.shape[0]
    order = torch.argsort(joint.flatten(), descending=True, stable=True)
    kept: list[tuple[int, int, float]] = []
    if first is not None:
        kept.append((first[0], first[1], float(joint[first])))
    for flat in order.tolist():
        if len(kept) >= k:
            break
        i, j = divmod(flat, n)
        if i > j or (first is not None and (i, j) == tuple(first)):
            continue
        if nms_iou is not None and any(temporal_iou((i, j), (s, e)) > nms_iou for s, e, _ in kept):
            continue
        kept.append((i, j, float(joint[i, j])))
    return kept
