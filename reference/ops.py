"""Small numeric helpers shared by the reference blocks: masking and dtype-safe fills."""
from __future__ import annotations

import torch

PADDING_MODES = ("batch", "isolated")


def mask_fill_value(dtype: torch.dtype) -> float:
    """The original's -1e30 mask value, clamped to what `dtype` can hold (fp16 would overflow)."""
    return max(-1e30, torch.finfo(dtype).min)


def mask_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace logits where `mask` is False by a large negative value (the original's mask_logits)."""
    return torch.where(mask, logits, torch.full((), mask_fill_value(logits.dtype), dtype=logits.dtype,
                                                 device=logits.device))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` with masked-out entries excluded (a fully masked row becomes uniform)."""
    return torch.softmax(mask_logits(logits, mask), dim=dim)


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean [B, max_len] mask, True for the first lengths[b] positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def check_padding(padding: str) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")


def relative_error(out, ref, mask: torch.Tensor | None = None) -> float:
    """‖out − ref‖ / ‖ref‖ in float64, the measure the project's tolerances are stated in, over the
    positions where `mask` ([B, N], broadcast over the rest) is set; NaN or inf anywhere in `out`
    gives inf, so it never passes a tolerance. Takes tensors or arrays."""
    out, ref = torch.as_tensor(out).double(), torch.as_tensor(ref).double()
    if not torch.isfinite(out).all():
        return float("inf")
    if mask is not None:
        mask = mask.reshape(*mask.shape, *([1] * (out.dim() - mask.dim()))).expand_as(out)
        out, ref = out[mask], ref[mask]
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def weights_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a module's parameters are stored in (its first parameter's)."""
    return next(module.parameters()).dtype


def weights_device(module: torch.nn.Module) -> torch.device:
    """The device a module's parameters live on (its first parameter's)."""
    return next(module.parameters()).device
