"""The key and shape logic of engine/compile/openvino_backend.py, without compiling: the key of a
stage's compiled model names its model's weights, stage, padding, shape, precision, runtime and CPU;
a stage's plan shape read from its inputs; the runtime precision of each engine precision."""
from __future__ import annotations

import logging

import pytest
import torch

from engine.errors import BackendError
from engine.io.checkpoint import weights_hash
from reference.testing import random_model
from tests.helpers import small_config

ob = pytest.importorskip("engine.compile.openvino_backend")
ov = pytest.importorskip("openvino", reason="the CPU fast path runs OpenVINO (pip install openvino)")

MODEL = random_model(small_config(max_pos_len=32), seed=5)


def stage(model=MODEL, name="cross", padding="isolated", precision="f32") -> ob.StageModels:
    return ob.StageModels(model, name, padding, precision, ob.EngineCache("/nonexistent"), 2)


def test_a_stages_key_holds_everything_its_compiled_model_depends_on():
    key = stage().key([2, 16, 8])  # a list, as a plan may give: the key holds a tuple
    cpu = f"{ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')} ["
    assert (key.weights_hash, key.stage, key.padding, key.shape, key.precision, key.runtime) == \
        (weights_hash(MODEL), "cross", "isolated", (2, 16, 8), "f32", ov.__version__)
    assert key.cpu.startswith(cpu) and key.graph_version == ob.GRAPH_VERSION
    assert key == stage().key((2, 16, 8))
    others = [stage(name="video").key((2, 16)), stage(padding="batch").key((2, 16, 8)),
              stage(precision="bf16").key((2, 16, 8)), stage().key((2, 16, 9)),
              stage(random_model(small_config(max_pos_len=32), seed=6)).key((2, 16, 8))]
    assert len({key.digest(), *(k.digest() for k in others)}) == 6


def test_the_cpu_name_lists_its_instruction_sets_sorted(monkeypatch):
    class FakeCore:
        def get_property(self, device, name):
            assert device == "CPU"
            return {"OPTIMIZATION_CAPABILITIES": ["FP32", "BF16", "INT8"], "FULL_DEVICE_NAME": "Some CPU"}[name]

    monkeypatch.setattr(ob, "core", FakeCore)
    assert ob.cpu_name() == "Some CPU [BF16 FP32 INT8]"


@pytest.mark.parametrize("name, shapes, expected", [
    ("video", [(3, 7, 1024), (3,)], (3, 7)),
    ("query", [(2, 5, 300), (2, 5, 4), (2,)], (2, 5, 4)),
    ("cross", [(2, 9, 16), (2,), (2, 4, 16), (2,), (2, 9, 4)], (2, 9, 4)),
])
def test_the_plan_shape_of_a_stages_inputs(name, shapes, expected):
    assert ob.shape_of(name, tuple(torch.zeros(s) for s in shapes)) == expected


@pytest.mark.parametrize("caps, expected, warned", [
    (["FP32", "BF16"], "bf16", False), (["FP32", "INT8"], "f32", True), (["FP32", "bf16"], "f32", True)])
def test_bf16_runs_bf16_only_where_the_cpu_has_it(monkeypatch, caplog, caps, expected, warned):
    class FakeCore:
        def get_property(self, device, name):
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return caps

    monkeypatch.setattr(ob, "core", FakeCore)
    with caplog.at_level(logging.WARNING):
        assert ob.runtime_precision("fp32") == "f32"
        assert caplog.messages == []
        assert ob.runtime_precision("bf16") == expected
    assert caplog.messages == (["openvino backend: this CPU has no bf16 support; running fp32"] if warned else [])


@pytest.mark.parametrize("precision", ["fp16", "f32", "FP32", "bf16 ", ""])
def test_other_precisions_are_refused(precision):
    with pytest.raises(BackendError) as info:
        ob.runtime_precision(precision)
    assert str(info.value) == f"the openvino backend runs fp32 or bf16, not {precision!r}"
