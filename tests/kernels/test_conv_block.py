"""kernels.conv_block.FusedConvBlock against its reference twin reference.conv_block.ConvBlock (float64)."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels.conv_block import FusedConvBlock
from reference.config import SeqPANConfig
from reference.conv_block import ConvBlock
from reference.ops import relative_error
from reference.precision import PRECISIONS
from reference.testing import init_like_trained, ragged_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def check(lens: list[int], padding: str, precision: str = "fp32", dim: int = 128, seed: int = 0,
          **options) -> None:
    """`batch` (no mask: padded rows are read) and `isolated` (mask zeroes them) modes."""
    dtype, dot, _ = PRECISIONS[precision]
    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=dim, num_heads=dim // 16)
    block = init_like_trained(ConvBlock(cfg), seed).to(DEVICE)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), max(lens), dim, generator=gen).to(DEVICE, dtype)
    mask = ragged_mask(lens, device=DEVICE) if padding == "isolated" else None
    with torch.no_grad():
        out = FusedConvBlock(block, allow_tf32=dot == "tf32", **options)(x, mask)
        ref = copy.deepcopy(block).double()(x.double(), mask)
    assert out.dtype == dtype and out.shape == x.shape
    err = relative_error(out, ref)
    assert err <= PRECISIONS[precision].tolerance, f"{precision} {padding}: relative error {err:.3g}"


@pytest.mark.parametrize("padding", ["batch", "isolated"])
@pytest.mark.parametrize("lens, options", [
    ([70, 1, 33], dict(tile_rows=64, stage=True)),  # tiles overlapping by a 12-row halo; staged matmuls
    ([1], {}),
    ([64, 17, 2], {}),  # one tile per sample, no halo
    ([1024], dict(tile_rows=256)),
], ids=["halo", "length-1", "charades", "longest"])
def test_fp32_matches_reference(lens, padding, options):
    check(lens, padding, **options)


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("bf16", False), ("fp16", True)])
def test_low_precision_within_tolerance(precision, stage):
    check([40, 1, 23], "isolated", precision, seed=1, stage=stage)


def test_small_config():
    check([19, 4], "batch", dim=32, seed=2)


def test_tile_too_small_for_halo():
    block = FusedConvBlock(ConvBlock(SeqPANConfig(num_words=4, num_chars=4)), tile_rows=16)
    with pytest.raises(ValueError, match="halo"):
        block(torch.zeros(1, 40, 128, device=DEVICE))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_cuda_benchmark_shape(precision, padding):
    lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    check([64, *lens[1:]], padding, precision)
    check([300, *lens[1:]], padding, precision)  # several tiles with halos
