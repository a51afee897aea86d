"""engine.cuda_graphs.GraphCache: least-recently-used eviction, the memory it reports, and graphs
dropped when the Triton kernels repack their weights (on CPU with a stand-in for the capture; on
a GPU with real graphs)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import engine.cuda_graphs as cuda_graphs
from engine.cuda_graphs import GraphCache, packed_weights_generation
from kernels.conv_block import FusedConvBlock
from kernels.triton_seqpan import triton_seqpan
from reference.config import SeqPANConfig
from reference.conv_block import ConvBlock
from reference.testing import init_like_trained, random_model
from tests.helpers import small_config


class FakeGraph:
    """Stands in for CapturedGraph on CPU: runs `fn` for the warm-up as the real one does and keeps
    the last outputs, which a replay returns (a graph replays what it captured, whatever the inputs'
    values); its capture "reserves" 1 KiB per input element."""

    captures: list[tuple] = []

    def __init__(self, fn, inputs, warmup, pool):
        for _ in range(warmup):
            self.outputs = fn(*inputs)
        self.memory_bytes = 1024 * sum(t.numel() for t in inputs)
        FakeGraph.captures.append(cuda_graphs.shape_key(inputs))

    def __call__(self, *inputs):
        return self.outputs


@pytest.fixture
def fake_capture(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "CapturedGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", object)
    FakeGraph.captures = []
    return FakeGraph.captures


def test_least_recently_used_graph_is_evicted_and_memory_reported(fake_capture):
    cache = GraphCache(lambda x: (x * 2,), max_graphs=2, warmup=1)
    a, b, c = torch.ones(2), torch.ones(3), torch.ones(4)
    for x in (a, b, a, c, a):  # c evicts b (a was used since); a stays captured
        assert torch.equal(cache(x)[0], x * 2)
    assert fake_capture == [cuda_graphs.shape_key([t]) for t in (a, b, c)]
    assert len(cache) == 2 and list(cache.graphs) == [cuda_graphs.shape_key([c]), cuda_graphs.shape_key([a])]
    assert cache.memory_bytes == 1024 * (2 + 3 + 4)  # the shared pool keeps what evicted graphs reserved
    cache(b)
    assert len(fake_capture) == 4 and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.memory_bytes == 0 and cache.pool is None


def test_triton_backend_lists_its_packed_weights():
    model = triton_seqpan(random_model(small_config(num_heads=2)), "fp32")  # the kernels need 16-wide heads
    # the shared and the predictor's conv blocks, 2 SGPA layers, 2 CQA blocks, pool-concat
    assert len(model.packed_weights) == 7 and packed_weights_generation(model) == 0
    assert packed_weights_generation(random_model(small_config())) == 0  # nothing packed: never changes


def test_graphs_are_dropped_when_the_kernels_repack(fake_capture):
    """A repack frees the packed copies every graph captured before reads: those graphs must go,
    whether a capture's warm-up repacked or something else ran the kernels eagerly."""
    block = FusedConvBlock(init_like_trained(ConvBlock(SeqPANConfig(num_words=4, num_chars=4, dim=16, num_heads=1))))
    model = SimpleNamespace(packed_weights=[block.packed])  # what the triton backend's model lists

    def forward(x):
        with torch.no_grad():
            return (block(x),)

    cache = GraphCache(forward, max_graphs=4, warmup=1, generation=lambda: packed_weights_generation(model))
    x = torch.randn(1, 20, 16, generator=torch.Generator().manual_seed(0))
    cache(x[:, :8])  # the warm-up packs the weights
    assert packed_weights_generation(model) == 1 and len(cache) == 1
    cache(x[:, :12])  # same weights: no repack, both graphs kept
    assert len(cache) == 2 and len(fake_capture) == 2

    with torch.no_grad():
        block.block.convs[0].pointwise.weight.mul_(2)  # in place: the block repacks on its next run
    cache(x)  # a new shape: its warm-up repacks, the graphs captured before go
    assert packed_weights_generation(model) == 2 and len(cache) == 1 and len(fake_capture) == 3
    cache(x[:, :8])  # captured again, on the new weights
    assert len(fake_capture) == 4
    want = forward(x[:, :8])[0]

    with torch.no_grad():
        block.block.convs[1].pointwise.weight.mul_(2)
    forward(x[:, :8])  # an eager run elsewhere repacks: every graph is dropped before a replay
    got = cache(x[:, :8])[0]
    assert len(fake_capture) == 5 and len(cache) == 1
    assert not torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_graph_cache_on_a_gpu():
    weight = torch.randn(64, 64, device="cuda")
    cache = GraphCache(lambda x: (torch.relu(x @ weight),), max_graphs=1)
    x, y = torch.randn(8, 64, device="cuda"), torch.randn(16, 64, device="cuda")
    torch.testing.assert_close(cache(x)[0], torch.relu(x @ weight))
    assert len(cache) == 1 and cache.memory_bytes > 0
    torch.testing.assert_close(cache(y)[0], torch.relu(y @ weight))  # evicts x's graph
    assert list(cache.graphs) == [cuda_graphs.shape_key([y])]
