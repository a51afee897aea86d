"""Backends: ways to run a SeqPAN, each returning a module with the reference's forward signature."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

from torch import nn

from reference.model import SeqPAN
from reference.ops import weights_device

from .devices import auto_backend_name
from .errors import BackendError

# name -> "module:function"; each function takes (model: SeqPAN, **options) and returns an
# nn.Module whose forward matches SeqPAN.forward (video, video_len, word_ids, char_ids,
# padding=..., gumbel_noise=...) -> SeqPANOutput.
BACKENDS: dict[str, str] = {
    "reference": "engine.backends:reference_backend",
    "triton": "kernels.triton_seqpan:triton_seqpan",
    "onnx": "engine.compile.onnx_backend:onnx_seqpan",
    "openvino": "engine.compile.openvino_backend:openvino_seqpan",
    "engine": "engine.backends:engine_backend",
}


def reference_backend(model: SeqPAN, **options) -> nn.Module:
    """The reference itself."""
    return model


def engine_backend(model: SeqPAN, **options) -> nn.Module:
    """Whatever the engine picks for the model's device."""
    device = weights_device(model)
    return build_backend(auto_backend_name(device), model, **options)


def use_triton_interpreter_on_cpu(model: SeqPAN) -> None:
    """Triton kernels run on CPU tensors only through Triton's interpreter, which must be chosen
    before the kernels are first imported: choose it then, or say why it is too late."""
    if weights_device(model).type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    if "kernels.common" in sys.modules:
        raise BackendError("the triton backend on CPU needs TRITON_INTERPRET=1 set before the kernels are "
                           "imported (or a CUDA GPU)")
    os.environ["TRITON_INTERPRET"] = "1"


def build_backend(name: str, model: SeqPAN, **options) -> nn.Module:
    """Wrap `model` with backend `name`; raises BackendError naming what is missing."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "triton":
        use_triton_interpreter_on_cpu(model)
    module_name, func_name = BACKENDS[name].split(":")
    try:
        factory: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), func_name)
    except ImportError as err:
        raise BackendError(f"backend {name!r} is unavailable: {err}") from None
    return factory(model, **options)
