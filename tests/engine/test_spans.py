"""Top-k moments: the best span is the paper's decoding; the rest are the next most probable spans."""
import itertools

import pytest
import torch

from engine.spans import temporal_iou, top_spans
from reference.localizer import decode_span


def brute_force(start_logits, end_logits, k, nms_iou=None):
    p_s, p_e = torch.softmax(start_logits.float(), 0), torch.softmax(end_logits.float(), 0)
    n = len(p_s)
    spans = sorted(((float(p_s[i] * p_e[j]), i, j) for i, j in itertools.product(range(n), repeat=2) if i <= j),
                   key=lambda t: (-t[0], t[1], t[2]))
    kept = []
    for prob, i, j in spans:
        if nms_iou is not None and any(temporal_iou((i, j), (a, b)) > nms_iou for a, b, _ in kept):
            continue
        kept.append((i, j, prob))
    return kept[:k]


def test_best_span_is_the_papers_decoding():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 17, 64):
        for _ in range(40):
            start, end = torch.randn(n, generator=gen) * 3, torch.randn(n, generator=gen) * 3
            s, e, score = decode_span(start[None], end[None], torch.ones(1, n, dtype=torch.bool))
            (i, j, prob), = top_spans(start, end, 1)
            assert (i, j) == (int(s), int(e)) and prob == pytest.approx(float(score), rel=1e-6)


@pytest.mark.parametrize("nms", [None, 0.5, 0.0])
def test_top_k_equals_brute_force(nms):
    gen = torch.Generator().manual_seed(1)
    for n in (3, 9, 20):
        start, end = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
        got = top_spans(start, end, 6, nms)
        want = brute_force(start, end, 6, nms)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
        assert all(a[2] == pytest.approx(b[2], rel=1e-6) for a, b in zip(got, want))
        assert all(i <= j for i, j, _ in got)


def test_forced_first_span_and_hand_example():
    # p_start = [.5, .5], p_end = [.5, .5] in effect: three spans of 0.25 each, ties by (start, end)
    flat = torch.zeros(2)
    assert [(i, j) for i, j, _ in top_spans(flat, flat, 5)] == [(0, 0), (0, 1), (1, 1)]
    assert [(i, j) for i, j, _ in top_spans(flat, flat, 2, first=(1, 1))] == [(1, 1), (0, 0)]
    # the forced span is passed over where it ranks, and the spans after it still come
    assert [(i, j) for i, j, _ in top_spans(flat, flat, 3, first=(0, 1))] == [(0, 1), (0, 0), (1, 1)]
    assert temporal_iou((0, 3), (2, 5)) == pytest.approx(2 / 6)


def test_ties_keep_start_then_end_order_at_any_length():
    """Equal probabilities everywhere: spans come in (start, end) order, also past the sizes where an
    unstable sort keeps it by chance."""
    flat = torch.zeros(12)
    assert [(i, j) for i, j, _ in top_spans(flat, flat, 14)] == [(0, j) for j in range(12)] + [(1, 1), (1, 2)]


@pytest.mark.parametrize("a, b, iou", [((0, 1), (3, 4), 0.0), ((0, 0), (1, 1), 0.0), ((2, 5), (4, 9), 2 / 8),
                                       ((4, 9), (2, 5), 2 / 8), ((3, 3), (3, 3), 1.0), ((1, 4), (2, 3), 2 / 4)])
def test_temporal_iou_by_hand(a, b, iou):
    """Inclusive clip spans: (2, 5) and (4, 9) share clips 4 and 5 of the 8 they cover."""
    assert temporal_iou(a, b) == pytest.approx(iou)
