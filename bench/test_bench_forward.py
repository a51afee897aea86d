"""pytest-benchmark: the full forward (reference vs engine) and each block (SGPA layer, CQA, conv
block, localizer), reference vs the Triton kernels when a GPU is present and `kernels` imports.

    python -m pytest bench -q [--benchmark-json FILE]

Forward cases use the workload's real queries (reference rows: bf16 = autocast over fp32
weights, as `seqpan bench`); block cases run on a copy of the model cast to the case's dtype.
"""
from __future__ import annotations

import importlib

import pytest

from bench.runner import engine_calls, reference_forward
from bench.workloads import model_inputs, requests
from engine import GroundingEngine

from .conftest import DEVICE, ON_GPU

pytest.importorskip("pytest_benchmark")

ENGINE_BACKENDS = ("reference", "auto", *(("triton",) if ON_GPU else ()))
# block -> (the reference module of a model, its kernel twin "module:class", call on (v, q, v_mask, q_mask))
BLOCKS = {
    "sgpa": (lambda m: m.sgpa[0], "kernels.sgpa:FusedSGPALayer", lambda f, v, q, vm, qm: f(v, q, vm, qm)),
    "cqa": (lambda m: m.q2v, "kernels.cqa:FusedCQA", lambda f, v, q, vm, qm: f(v, q, vm, qm)),
    "conv_block": (lambda m: m.conv_block, "kernels.conv_block:FusedConvBlock", lambda f, v, q, vm, qm: f(v, vm)),
    "localizer": (lambda m: m.predictor, "kernels.model:FusedSpanPredictor", lambda f, v, q, vm, qm: f(v, vm, vm)),
}


def test_forward_reference(case, timed):
    records = case.workload.take(case.batch)
    inputs = model_inputs(case.workload, records, *case.workload.vocab(), DEVICE)
    forward = reference_forward(case.model, case.precision, DEVICE)
    timed(lambda: forward(*inputs))


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_forward_engine(case, timed, backend):
    engine = GroundingEngine(case.model, *case.workload.vocab(), device=DEVICE, precision=case.precision,
                             backend=backend, max_batch=case.batch)
    timed(engine_calls(engine, requests(case.workload, case.workload.take(case.batch))))


def _kernel_twin(spec: str):
    if not ON_GPU:
        pytest.skip("the Triton kernels are timed on a GPU only")
    module, name = spec.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        pytest.skip(f"kernels unavailable: {err}")


@pytest.mark.parametrize("impl", ["reference", pytest.param("triton", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_block(case, timed, block, impl):
    pick, twin, call = BLOCKS[block]
    module = pick(case.cast_model)
    if impl == "triton":
        module = _kernel_twin(twin)(module)
    v, q, v_mask, q_mask = case.activations
    timed(lambda: call(module, v, q, v_mask, q_mask))

