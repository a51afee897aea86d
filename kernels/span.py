"""Fused span decoding (`reference.localizer.decode_span`): one program per sample does both masked
softmaxes, the suffix/prefix maxima, the two first-argmaxes and the score, in one launch."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import MASK_VALUE, cast, device_fn


@triton.jit
def _max(a, b):  # a scan's combine function must be a jit function, even under the interpreter
    return tl.maximum(a, b)


@device_fn
def _masked_softmax(logits, ok, in_range):
    """Softmax over a row with masked entries at -1e30 and entries past the row left out."""
    logits = tl.where(in_range, tl.where(ok, logits, MASK_VALUE), float("-inf"))
    p = tl.exp(logits - tl.max(logits, 0))
    return p / tl.sum(p, 0)


@triton.jit
def _decode_span_kernel(
    start_ptr,  # [B, N] contiguous (strides N, 1), fp32, bf16 or fp16: the start logits
    end_ptr,  # [B, N] contiguous, the start logits' dtype: the end logits
    mask_ptr,  # [B, N] contiguous, any dtype (nonzero = a valid clip)
    start_index_ptr,  # [B] int64: each sample's start index
    end_index_ptr,  # [B] int64: its end index
    score_ptr,  # [B] the logits' dtype: p_start(start) * p_end(end)
    N,  # clips of a row
    BLOCK: tl.constexpr,  # a power of two >= N: one program holds a whole row
):
    """One sample's span (grid: (B,))."""
    b = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    in_range = cols < N
    ok = tl.load(mask_ptr + b * N + cols, mask=in_range, other=0) != 0
    p_start = _masked_softmax(tl.load(start_ptr + b * N + cols, mask=in_range, other=0.0).to(tl.float32), ok,
                              in_range)
    p_end = _masked_softmax(tl.load(end_ptr + b * N + cols, mask=in_range, other=0.0).to(tl.float32), ok, in_range)
    suffix_max_end = tl.associative_scan(p_end, 0, _max, reverse=True)
    prefix_max_start = tl.associative_scan(p_start, 0, _max)
    start = tl.argmax(p_start * suffix_max_end, 0, tie_break_left=True)
    end = tl.argmax(p_end * prefix_max_start, 0, tie_break_left=True)
    score = tl.sum(tl.where(cols == start, p_start, 0.0), 0) * tl.sum(tl.where(cols == end, p_end, 0.0), 0)
    tl.store(start_index_ptr + b, start.to(tl.int64))
    tl.store(end_index_ptr + b, end.to(tl.int64))
    tl.store(score_ptr + b, cast(score, score_ptr.dtype.element_ty))


def decode_span(start_logits: torch.Tensor, end_logits: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start_index, end_index, score) exactly as `reference.localizer.decode_span`, in one launch.

    Probabilities are computed in fp32 whatever the logits' dtype; the score has the logits' dtype.
    """
    b, n = start_logits.shape
    start_index = torch.empty(b, dtype=torch.int64, device=start_logits.device)
    end_index = torch.empty_like(start_index)
    score = torch.empty(b, dtype=start_logits.dtype, device=start_logits.device)
    _decode_span_kernel[(b,)](start_logits.contiguous(), end_logits.contiguous(), mask.contiguous(), start_index,
                              end_index, score, n, triton.next_power_of_2(n))
    return start_index, end_index, score
