"""Random models and masks for tests and benchmarks: one builder, so every suite draws weights alike."""
from __future__ import annotations

import torch
from torch import nn

from .config import SeqPANConfig
from .model import SeqPAN
from .ops import length_mask

WORD_VECTOR_STD = 0.3  # frozen word vectors (GloVe's table): about GloVe's per-dimension scale


def init_like_trained(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter the way the golden files perturb theirs: layer-norm scales
    1 ± 0.05, dense kernels ~ N(0, 1/fan_in), every other vector or filter ~ N(0, 0.1²); floating
    buffers (the frozen word vectors) ~ N(0, 0.3²). Nothing is left at a zero or one initialiser."""
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
            for b in mod.buffers(recurse=False):
                if b.is_floating_point():
                    b.copy_(WORD_VECTOR_STD * torch.randn(b.shape, generator=gen, dtype=torch.float64))
    return module.eval()


def random_model(cfg: SeqPANConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> SeqPAN:
    """A SeqPAN of `cfg` with trained-like random weights (`init_like_trained`), in eval mode."""
    return init_like_trained(SeqPAN(cfg), seed).to(dtype)


def ragged_mask(lengths: list[int], max_len: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, max_len] bool mask with the first lengths[b] positions set."""
    return length_mask(torch.tensor(lengths, device=device), max_len or max(lengths))


def random_lengths(batch: int, longest: int, gen: torch.Generator) -> list[int]:
    """`batch` sequence lengths in [1, longest]: a length-1 one and a full one whenever the batch
    has room, the rest random (ragged), in random order."""
    lengths = torch.randint(1, longest + 1, (batch,), generator=gen).tolist()
    lengths[0] = longest
    if batch > 1:
        lengths[1] = 1
    return [lengths[i] for i in torch.randperm(batch, generator=gen).tolist()]
