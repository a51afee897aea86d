"""kernels.conv_block.FusedConvBlock against its reference twin reference.conv_block.ConvBlock (float64),
sample by sample."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels.conv_block import FusedConvBlock, conv_block, pack_conv_block
from kernels.settings import calculate_settings
from reference.config import SeqPANConfig
from reference.conv_block import ConvBlock
from reference.precision import PRECISIONS
from reference.testing import init_like_trained, random_lengths, ragged_mask
from tests.helpers import assert_samples_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def check(lens: list[int], padding: str, precision: str = "fp32", dim: int = 128, seed: int = 0,
          **options) -> None:
    """`batch` (no mask: padded rows are read) and `isolated` (mask zeroes them) modes."""
    dtype, dot, tolerance = PRECISIONS[precision]
    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=dim, num_heads=dim // 16)
    block = init_like_trained(ConvBlock(cfg), seed).to(DEVICE)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), max(lens), dim, generator=gen).to(DEVICE, dtype)
    mask = ragged_mask(lens, device=DEVICE) if padding == "isolated" else None
    with torch.no_grad():
        out = FusedConvBlock(block, allow_tf32=dot == "tf32", **options)(x, mask)
        ref = copy.deepcopy(block).double()(x.double(), mask)
    assert out.dtype == dtype and out.shape == x.shape
    assert_samples_close(out, ref, tolerance, ragged_mask(lens, device=DEVICE), f"{precision} {padding}")


@pytest.mark.parametrize("padding", ["batch", "isolated"])
@pytest.mark.parametrize("lens, options", [
    ([70, 1, 33], dict(tile_rows=64)),  # tiles overlapping by a 12-row halo
    ([1], {}),
    ([64, 17, 2], {}),  # one tile per sample, no halo
    ([1024], dict(tile_rows=256)),
], ids=["halo", "length-1", "charades", "longest"])
def test_fp32_matches_reference(lens, padding, options):
    check(lens, padding, **options)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_shapes(seed):
    """Random batch, lengths (one of 1, one full, the rest ragged), tile and padding mode."""
    gen = torch.Generator().manual_seed(seed)
    lens = random_lengths(int(torch.randint(1, 5, (), generator=gen)), int(torch.randint(1, 100, (), generator=gen)),
                          gen)
    padding = ["batch", "isolated"][int(torch.randint(0, 2, (), generator=gen))]
    check(lens, padding, seed=seed, tile_rows=[32, 64][int(torch.randint(0, 2, (), generator=gen))])


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("tf32", True), ("bf16", False), ("fp16", True)])
def test_low_precision_within_tolerance(precision, stage):
    """tf32 with the tensor core's operand truncation emulated by the interpreter (see kernels.common.mm)."""
    check([40, 1, 23], "isolated", precision, seed=1, stage=stage)


@pytest.mark.parametrize("dim", [32, 16])
def test_small_dims(dim):
    """Dim 16 is narrower than a staged matmul's K chunk: the chunk must shrink to it."""
    check([19, 4], "batch", dim=dim, seed=2)  # IEEE fp32 always stages
    check([19, 4], "isolated", "bf16", dim=dim, seed=2, stage=True)


def test_tile_too_small_for_halo():
    block = FusedConvBlock(ConvBlock(SeqPANConfig(num_words=4, num_chars=4)), tile_rows=16)
    with pytest.raises(ValueError, match="halo"):
        block(torch.zeros(1, 40, 128, device=DEVICE))



@pytest.mark.parametrize("seed", [21, 22])
def test_the_launcher_alone_equals_the_reference(seed):
    """kernels.conv_block.conv_block called as a function (no module) with pack_conv_block's weights,
    on a random batch and lengths (one of 1, one full, the rest ragged), with and without a mask:
    the default settings (one tile), and 32-row tiles (several, overlapping by their halo)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=32, num_heads=2)
    block = init_like_trained(ConvBlock(cfg), seed).to(DEVICE)
    lens = random_lengths(int(torch.randint(2, 5, (), generator=gen)), int(torch.randint(33, 90, (), generator=gen)),
                          gen)
    x = torch.randn(len(lens), max(lens), 32, generator=gen).to(DEVICE)
    ragged = ragged_mask(lens, device=DEVICE)
    with torch.no_grad():
        for mask in (None, ragged):
            expected = copy.deepcopy(block).double()(x.double(), mask)
            for settings in (None, calculate_settings("conv_block", torch.float32, "ieee", 32, rows=32)):
                out = conv_block(x, mask, pack_conv_block(block, torch.float32), block.norms[0].eps, settings)
                assert out.shape == x.shape
                assert_samples_close(out, expected, PRECISIONS["fp32"].tolerance, ragged,
                                     f"mask {mask is not None}, settings {settings}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_cuda_benchmark_shape(precision, padding):
    lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    check([64, *lens[1:]], padding, precision)
    check([300, *lens[1:]], padding, precision)  # several tiles with halos
