"""kernels.sgpa.FusedSGPALayer against its reference twin reference.sgpa.SGPALayer (float64),
sample by sample."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels.sgpa import FusedSGPALayer, pack_sgpa, sgpa
from kernels.settings import calculate_settings
from reference.config import SeqPANConfig
from reference.ops import relative_error
from reference.precision import PRECISIONS
from reference.sgpa import SGPALayer
from reference.testing import init_like_trained, random_lengths, ragged_mask
from tests.helpers import assert_samples_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_layer(dim: int = 128, heads: int = 8, seed: int = 0) -> SGPALayer:
    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=dim, num_heads=heads)
    return init_like_trained(SGPALayer(cfg), seed).to(DEVICE)


def check_both_directions(layer: SGPALayer, v_lens: list[int], q_lens: list[int], precision: str = "fp32",
                          seed: int = 0, **options) -> None:
    """v' = layer(v, q), q' = layer(q, v), as the model applies it, against float64."""
    dtype, dot, tolerance = PRECISIONS[precision]
    gen = torch.Generator().manual_seed(seed)
    d = layer.dense_1.in_features
    v = torch.randn(len(v_lens), max(v_lens), d, generator=gen).to(DEVICE, dtype)
    q = torch.randn(len(q_lens), max(q_lens), d, generator=gen).to(DEVICE, dtype)
    v_mask, q_mask = ragged_mask(v_lens, device=DEVICE), ragged_mask(q_lens, device=DEVICE)
    fused = FusedSGPALayer(layer, allow_tf32=dot == "tf32", **options)
    ref = copy.deepcopy(layer).double()
    with torch.no_grad():
        for x, y, x_mask, y_mask in ((v, q, v_mask, q_mask), (q, v, q_mask, v_mask)):
            out = fused(x, y, x_mask, y_mask)
            assert out.dtype == dtype and out.shape == x.shape
            # padded rows too (uniform attention, zero gated output): the `batch` padding mode's
            # convolutions read them downstream
            assert_samples_close(out, ref(x.double(), y.double(), x_mask, y_mask), tolerance, x_mask,
                                 precision)


@pytest.mark.parametrize("v_lens, q_lens, options", [
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_keys=32)),  # K/V pre-projected, 3 key blocks
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_keys=32, kv="inline")),  # K/V projected per key block
    ([1], [1], {}),
    ([64, 17, 2], [5, 12, 1], {}),  # the Charades shape
    ([1024, 3], [128, 1], dict(block_rows=256, block_keys=256)),  # longest video and query
], ids=["pre-kv", "inline-kv", "length-1", "charades", "longest"])
def test_fp32_matches_reference(v_lens, q_lens, options):
    check_both_directions(make_layer(), v_lens, q_lens, **options)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_shapes(seed):
    """Random batch, lengths (one of 1, one full, the rest ragged), blocks and K/V mode."""
    gen = torch.Generator().manual_seed(seed)
    batch = int(torch.randint(1, 5, (), generator=gen))
    v_lens = random_lengths(batch, int(torch.randint(1, 90, (), generator=gen)), gen)
    q_lens = random_lengths(batch, int(torch.randint(1, 25, (), generator=gen)), gen)
    blocks = [16, 32, 64][int(torch.randint(0, 3, (), generator=gen))]
    kv = ["auto", "inline", "pre"][int(torch.randint(0, 3, (), generator=gen))]
    check_both_directions(make_layer(seed=seed), v_lens, q_lens, seed=seed, block_rows=blocks, block_keys=blocks,
                          kv=kv)


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("tf32", True), ("bf16", False), ("fp16", True)])
def test_low_precision_within_tolerance(precision, stage):
    """tf32 with the tensor core's operand truncation emulated by the interpreter (see kernels.common.mm)."""
    check_both_directions(make_layer(seed=1), [40, 1, 23], [1, 9, 5], precision, block_rows=32, block_keys=32,
                          stage=stage)


@pytest.mark.parametrize("dim, heads", [(32, 2), (16, 1)])
def test_small_dims(dim, heads):
    """Dim 16 is narrower than a staged matmul's K chunk: the chunk must shrink to it."""
    layer = make_layer(dim=dim, heads=heads, seed=2)
    assert FusedSGPALayer(layer).settings(torch.float32).stage  # IEEE fp32 always stages
    check_both_directions(layer, [19, 4], [3, 7])
    check_both_directions(layer, [19, 4], [3, 7], "bf16", stage=True)


def test_weights_follow_the_layer():
    layer = make_layer(seed=3)
    fused = FusedSGPALayer(layer)
    x, y = torch.randn(2, 5, 128, device=DEVICE), torch.randn(2, 3, 128, device=DEVICE)
    x_mask, y_mask = ragged_mask([5, 2], device=DEVICE), ragged_mask([3, 1], device=DEVICE)
    with torch.no_grad():
        before = fused(x, y, x_mask, y_mask)
        layer.attention.x_gate.weight.mul_(2)  # in place: the packed copy must be rebuilt
        after = fused(x, y, x_mask, y_mask)
        expected = copy.deepcopy(layer).double()(x.double(), y.double(), x_mask, y_mask)
    assert relative_error(after, expected) <= PRECISIONS["fp32"].tolerance
    assert relative_error(before, expected) > 1e-3


def test_rejects_unsupported_dims():
    with pytest.raises(ValueError, match="power-of-two"):
        FusedSGPALayer(make_layer(dim=48, heads=3))



@pytest.mark.parametrize("seed", [21, 22])
def test_the_launcher_alone_equals_the_reference(seed):
    """kernels.sgpa.sgpa called as a function (no module) with pack_sgpa's weights, on a random batch and
    lengths (one of 1, one full, the rest ragged): the default settings, and 16-row blocks (several row
    and key blocks, K/V projected apart)."""
    gen = torch.Generator().manual_seed(seed)
    layer = make_layer(dim=32, heads=2, seed=seed)
    batch = int(torch.randint(2, 5, (), generator=gen))
    v_lens = random_lengths(batch, int(torch.randint(17, 60, (), generator=gen)), gen)
    q_lens = random_lengths(batch, int(torch.randint(2, 20, (), generator=gen)), gen)
    x = torch.randn(batch, max(v_lens), 32, generator=gen).to(DEVICE)
    y = torch.randn(batch, max(q_lens), 32, generator=gen).to(DEVICE)
    x_mask, y_mask = ragged_mask(v_lens, device=DEVICE), ragged_mask(q_lens, device=DEVICE)
    with torch.no_grad():
        expected = copy.deepcopy(layer).double()(x.double(), y.double(), x_mask, y_mask)
        for settings in (None, calculate_settings("sgpa", torch.float32, "ieee", 32, rows=16, keys=16)):
            out = sgpa(x, y, x_mask, y_mask, pack_sgpa(layer, torch.float32), 2, layer.norm_1.eps, settings)
            assert out.shape == x.shape
            assert_samples_close(out, expected, PRECISIONS["fp32"].tolerance, x_mask, f"settings {settings}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_benchmark_shape(precision):
    lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    check_both_directions(make_layer(), [64, *lens[1:]], [12, *[1 + n % 12 for n in lens[1:]]], precision)
