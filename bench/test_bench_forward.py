"""pytest-benchmark: the full forward (reference vs engine) and each block (SGPA layer, CQA, conv
block, localizer), reference vs the Triton kernels when a GPU is present and `kernels` imports.

    python -m pytest bench -q [--benchmark-json FILE]

Forward cases use the workload's real queries (reference rows: bf16 = autocast over fp32
weights, as `seqpan bench`); block cases run on a copy of the model cast to the case's dtype.
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from bench.backends import engine_ground, reference_forward
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
    "localizer": (lambda m: m.predictor, "kernels.triton_seqpan:FusedSpanPredictor", lambda f, v, q, vm, qm: f(v, vm, vm)),
}


SCORE_RTOL = 1e-5  # README: a request's score within 1e-5 relative of its score alone (fp32)


def answers_alone(case, records) -> list[tuple[int, int, float]]:
    """(start, end, score) of each record run alone through the fp32 reference: what a timed call must
    answer."""
    answers = []
    for record in records:
        inputs = model_inputs(case.workload, [record], *case.workload.vocab(), DEVICE)
        with torch.no_grad():
            out = case.model(*inputs, "batch")
        answers.append((int(out.start_index[0]), int(out.end_index[0]), float(out.score[0])))
    return answers


def check_answers(got: list[tuple[int, int, float]], expected: list[tuple[int, int, float]], precision: str,
                  clips: int) -> None:
    """fp32: the spans alone exactly, their scores within SCORE_RTOL. bf16 may move a near-tie, so
    only valid spans and finite scores are required."""
    assert len(got) == len(expected)
    if precision == "fp32":
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], rel=SCORE_RTOL)
    else:
        assert all(0 <= s <= e < clips and math.isfinite(score) for s, e, score in got)


def test_forward_reference(case, timed):
    records = case.workload.take(case.batch)
    inputs = model_inputs(case.workload, records, *case.workload.vocab(), DEVICE)
    forward = reference_forward(case.model, case.precision, DEVICE)
    timed(lambda: forward(*inputs))
    with torch.no_grad():
        start, end, score = forward(*inputs)
    check_answers(list(zip(start.tolist(), end.tolist(), score.float().tolist())), answers_alone(case, records),
                  case.precision, case.workload.n_clips)


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_forward_engine(case, timed, backend):
    engine = GroundingEngine(case.model, *case.workload.vocab(), device=DEVICE, precision=case.precision,
                             backend=backend, max_batch=case.batch)
    records = case.workload.take(case.batch)
    reqs = requests(case.workload, records)
    timed(engine_ground(engine, reqs))
    got = [(r.start_index, r.end_index, r.score) for r in engine.ground(reqs)]
    check_answers(got, answers_alone(case, records), case.precision, case.workload.n_clips)


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

