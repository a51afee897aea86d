"""Backends: ways to run a SeqPAN, each returning a module with the reference's forward signature."""
from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import nn

from reference.model import SeqPAN

# name -> "module:function"; each function takes (model: SeqPAN, **options) and returns an
# nn.Module whose forward matches SeqPAN.forward (video, video_len, word_ids, char_ids,
# padding=..., gumbel_noise=...) -> SeqPANOutput.
BACKENDS: dict[str, str] = {
    "reference": "engine.backends:reference_backend",
    "triton": "kernels.model:triton_seqpan",
    "onnx": "engine.localizer_export:onnx_seqpan",
    "engine": "engine.backends:engine_backend",
}


class BackendError(RuntimeError):
    """A backend that is unknown or cannot run here (missing package, no GPU, ...)."""


def reference_backend(model: SeqPAN, **options) -> nn.Module:
    """The reference itself."""
    return model


def auto_backend_name(device: torch.device) -> str:
    """What the engine runs: the Triton kernels on a CUDA GPU, the reference elsewhere."""
    return "triton" if device.type == "cuda" else "reference"


def engine_backend(model: SeqPAN, **options) -> nn.Module:
    """Whatever the engine picks for the model's device."""
    device = next(model.parameters()).device
    return build_backend(auto_backend_name(device), model, **options)


def build_backend(name: str, model: SeqPAN, **options) -> nn.Module:
    """Wrap `model` with backend `name`; raises BackendError naming what is missing."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, func_name = BACKENDS[name].split(":")
    try:
        factory: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), func_name)
    except ImportError as err:
        raise BackendError(f"backend {name!r} is unavailable: {err}") from None
    return factory(model, **options)
