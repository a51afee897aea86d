"""Fixtures of the pytest-benchmark suite (`python -m pytest bench -q`; the default run collects tests/ only).

On a GPU the cases have real shapes (Charades 64 clips at batch 1, TACoS 256 clips at batch 256;
fp32 and bf16); on CPU one tiny case (16 clips, batch 2, fp32) so that the suite runs anywhere.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from functools import cache, cached_property

import pytest
import torch

from bench.workloads import Workload, load_workload, random_model
from reference.model import SeqPAN
from reference.precision import ENGINE_PRECISIONS, PRECISIONS

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
# (workload, clips, batch)
SHAPES = [("charades", 64, 1), ("tacos", 256, 256)] if ON_GPU else [("charades", 16, 2)]
TIMED_PRECISIONS = ENGINE_PRECISIONS if ON_GPU else ("fp32",)
QUERY_WORDS = 12  # block inputs: queries padded to this many words


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs an NVIDIA GPU")


@cache
def _model(name: str) -> SeqPAN:
    return random_model(load_workload(name)).to(DEVICE)


@dataclass
class Case:
    """One benchmark shape and precision: the workload, its fp32 model, and block activations."""
    workload: Workload
    batch: int
    precision: str

    @property
    def model(self) -> SeqPAN:
        return _model(self.workload.name)

    @cached_property
    def cast_model(self) -> SeqPAN:
        """A copy of the model in the case's dtype (what the blocks run on)."""
        return copy.deepcopy(self.model).to(PRECISIONS[self.precision].dtype)

    @cached_property
    def activations(self) -> tuple[torch.Tensor, ...]:
        """(v [B, N, D], q [B, M, D], v_mask, q_mask): random values, random valid lengths."""
        g = torch.Generator().manual_seed(0)
        b, n, d = self.batch, self.workload.n_clips, self.model.cfg.dim
        v_len = torch.randint(n // 2, n + 1, (b,), generator=g)
        q_len = torch.randint(4, QUERY_WORDS + 1, (b,), generator=g)
        v_len[0], q_len[0] = n, QUERY_WORDS
        v = torch.randn(b, n, d, generator=g)
        q = torch.randn(b, QUERY_WORDS, d, generator=g)
        v_mask = torch.arange(n)[None] < v_len[:, None]
        q_mask = torch.arange(QUERY_WORDS)[None] < q_len[:, None]
        dtype = PRECISIONS[self.precision].dtype
        return v.to(DEVICE, dtype), q.to(DEVICE, dtype), v_mask.to(DEVICE), q_mask.to(DEVICE)


@pytest.fixture(params=[(*shape, p) for shape in SHAPES for p in TIMED_PRECISIONS],
                ids=lambda s: f"{s[0]}-N{s[1]}-B{s[2]}-{s[3]}")
def case(request) -> Case:
    name, clips, batch, precision = request.param
    return Case(dataclasses.replace(load_workload(name), n_clips=clips), batch, precision)


@pytest.fixture
def timed(benchmark):
    """benchmark(fn) that waits for the GPU at the end of every call."""
    def run(fn):
        def call():
            fn()
            if ON_GPU:
                torch.cuda.synchronize()
        with torch.no_grad():
            benchmark(call)
    return run
