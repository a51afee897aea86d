"""Precision names, one table for every layer: kernels, backends, exports, the engine and benchmarks."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Precision(NamedTuple):
    dtype: torch.dtype  # storage and activation dtype
    dot: str  # tl.dot input precision for fp32 operands: "ieee" or "tf32"
    tolerance: float  # relative error allowed against a float64 reference (docs/architecture.md)


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision(torch.float32, "ieee", 1e-4),
    "tf32": Precision(torch.float32, "tf32", 1e-3),
    "bf16": Precision(torch.bfloat16, "ieee", 2e-2),
    "fp16": Precision(torch.float16, "ieee", 2e-2),
}
ENGINE_PRECISIONS = ("fp32", "bf16")  # what GroundingEngine serves ("auto" picks one per device)
EXPORT_PRECISIONS = ("fp32", "fp16", "bf16")  # one storage dtype each: what ONNX and TensorRT take


def precision_name(dtype: torch.dtype) -> str | None:
    """The name (fp32, fp16 or bf16) of a storage dtype, None for any other dtype."""
    return next((name for name in EXPORT_PRECISIONS if PRECISIONS[name].dtype == dtype), None)


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> "float32"."""
    return str(dtype).removeprefix("torch.")
