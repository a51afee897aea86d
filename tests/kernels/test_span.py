"""kernels.span.decode_span against its reference twin reference.localizer.decode_span."""
from __future__ import annotations

import pytest
import torch

from kernels.span import decode_span
from reference.localizer import decode_span as reference_decode_span
from reference.testing import ragged_mask, random_lengths

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def check(lens: list[int], seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 3.0) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = max(lens)
    start = (scale * torch.randn(len(lens), n, generator=gen)).to(DEVICE, dtype)
    end = (scale * torch.randn(len(lens), n, generator=gen)).to(DEVICE, dtype)
    mask = ragged_mask(lens, device=DEVICE)
    start_index, end_index, score = decode_span(start, end, mask)
    ref_start, ref_end, ref_score = reference_decode_span(start.float(), end.float(), mask)
    assert start_index.dtype == end_index.dtype == torch.int64 and score.dtype == dtype
    assert torch.equal(start_index, ref_start) and torch.equal(end_index, ref_end)
    assert (start_index < torch.tensor(lens, device=DEVICE)).all() and (end_index >= 0).all()
    torch.testing.assert_close(score.float(), ref_score, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=0)


@pytest.mark.parametrize("lens", [[1], [2, 1], [7, 3, 1, 7], [64, 17, 2, 64, 40], [256, 100, 1]])
def test_matches_reference(lens):
    check(lens)


def test_longest_video():
    check([1024, 511], seed=1)


def test_peaked_logits_and_ties():
    """Saturated softmaxes (exact 0 and 1 probabilities) and equal logits: first argmax wins."""
    check([50, 9], seed=2, scale=60.0)
    mask = ragged_mask([6, 3], device=DEVICE)
    flat = torch.zeros(2, 6, device=DEVICE)
    assert decode_span(flat, flat, mask)[0].tolist() == reference_decode_span(flat, flat, mask)[0].tolist() == [0, 0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype):
    check([64, 17, 2], seed=3, dtype=dtype)


@pytest.mark.parametrize("seed", [21, 22])
def test_random_lengths(seed):
    """A random batch and lengths (one of 1, one full, the rest ragged)."""
    gen = torch.Generator().manual_seed(seed)
    check(random_lengths(int(torch.randint(2, 9, (), generator=gen)), int(torch.randint(2, 300, (), generator=gen)),
                         gen), seed)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_large_batch():
    lens = torch.randint(1, 257, (1024,), generator=torch.Generator().manual_seed(0)).tolist()
    check(lens, seed=4)
