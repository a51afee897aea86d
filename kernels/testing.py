"""Helpers shared by the kernel parity tests and the kernel benchmark: trained-like random
weights, ragged masks, and the design's tolerances (measured with reference.ops.relative_error)."""
from __future__ import annotations

import torch
from torch import nn

from reference.ops import length_mask

# DESIGN.md: relative error against a float64 reference, per precision.
TOLERANCES = {"fp32": 1e-4, "tf32": 1e-3, "bf16": 2e-2, "fp16": 2e-2}


def init_like_trained(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter the way the golden files perturb theirs: layer-norm scales
    1 ± 0.05, dense kernels ~ N(0, 1/fan_in), every other vector or filter ~ N(0, 0.1²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                if isinstance(mod, nn.LayerNorm) and name == "weight":
                    noise = 1 + 0.05 * noise
                elif isinstance(mod, nn.Linear) and name == "weight":
                    noise = noise / p.shape[1] ** 0.5
                else:
                    noise = 0.1 * noise
                p.copy_(noise)
    return module.eval()


def ragged_mask(lengths: list[int], max_len: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, max_len] bool mask with the first lengths[b] positions set."""
    lengths_t = torch.tensor(lengths, device=device)
    return length_mask(lengths_t, max_len or max(lengths))
