"""Launch parameters of every kernel, chosen in one place per kernel, dtype and shape (as
Liger-Kernel's `calculate_settings`), with what users may ask for clamped to what launches.

The limits come from compiling every configuration for sm_90 (H100/H200: 232,448 B of shared
memory per block) with Triton's own compiler: see `kernels.cross_compile` and
bench/results/kernel-resources-sm90.md. tests/test_kernel_resources.py keeps them true.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

KERNELS = ("conv_block", "sgpa", "cqa", "pool_concat")
MIN_BLOCK = 16  # tl.dot needs 16 or more rows and columns


def block_size(n: int, cap: int, floor: int = MIN_BLOCK) -> int:
    """Smallest power of two >= n, clamped to [floor, cap]."""
    return max(floor, min(cap, triton.next_power_of_2(n)))


def precision_class(dtype: torch.dtype, precision: str) -> str:
    """"fp32" (IEEE fp32 dots), "tf32" (fp32 storage, TF32 dots) or "half" (bf16 / fp16)."""
    if dtype == torch.float32:
        return "tf32" if precision == "tf32" else "fp32"
    if dtype in (torch.bfloat16, torch.float16):
        return "half"
    raise ValueError(f"the Triton kernels run fp32, bf16 or fp16 tensors, got {dtype}")


@dataclass(frozen=True)
class Settings:
    """What one kernel module launches with at one dtype, precision and dim.

    rows: the most rows a program owns (query rows, context rows, conv tile rows); keys: the most
    key rows or words one step of a loop covers (unused by the conv block); stage: weight matmuls
    go through per-program scratch in chunks (`kernels.common.matmul`); num_warps, num_stages:
    Triton's launch options (num_stages is the depth of software pipelining of loop loads).
    """
    rows: int
    keys: int
    stage: bool
    num_warps: int
    num_stages: int

    def row_block(self, n: int) -> int:
        """The row block for a sequence of n rows."""
        return block_size(n, self.rows)

    def key_block(self, n: int) -> int:
        """The key block for a sequence of n keys."""
        return block_size(n, self.keys)

    @property
    def launch(self) -> dict[str, int]:
        """Triton's launch options, as keyword arguments of `kernel[grid](...)`."""
        return dict(num_warps=self.num_warps, num_stages=self.num_stages)


@dataclass(frozen=True)
class Rule:
    """Defaults and limits of one kernel at one precision class (blocks are powers of two)."""
    rows: int  # default row cap
    keys: int  # default key cap
    max_rows: int  # the largest row cap that launches at every dim
    max_keys: int
    num_stages: int = 3
    stage_from_dim: int | None = None  # dims from this up always stage (whole weights too large)


# kernel -> precision class -> rule. IEEE fp32 always stages: a compiled fp32 dot over a whole
# [D, D] weight is unrolled FMAs through shared memory (minutes of compile time, most of the
# shared memory); the chunked loop holds one chunk's dot instead.
RULES: dict[str, dict[str, Rule]] = {
    "conv_block": {
        "fp32": Rule(64, 0, 256, 0),
        "tf32": Rule(64, 0, 256, 0),
        "half": Rule(64, 0, 256, 0),
    },
    "sgpa": {
        "fp32": Rule(32, 32, 256, 256),
        "tf32": Rule(32, 32, 256, 256),
        "half": Rule(64, 64, 256, 256),
    },
    "cqa": {
        "fp32": Rule(32, 32, 256, 256),
        "tf32": Rule(32, 32, 256, 256),
        "half": Rule(64, 32, 256, 256),
    },
    "pool_concat": {
        "fp32": Rule(64, 64, 256, 256),
        "tf32": Rule(64, 64, 256, 256),
        "half": Rule(64, 64, 256, 256),
    },
}
NUM_WARPS = 8


def _cap(asked: int | None, default: int, largest: int, name: str) -> int:
    if asked is None:
        return default
    if asked < 1:
        raise ValueError(f"{name} must be positive, got {asked}")
    return block_size(asked, largest)


def calculate_settings(kernel: str, dtype: torch.dtype, precision: str, dim: int, rows: int | None = None,
                       keys: int | None = None, stage: bool | None = None,
                       num_warps: int | None = None) -> Settings:
    """The launch settings of `kernel` (one of KERNELS) for `dtype` tensors, dot `precision`
    ("ieee" or "tf32") and model `dim`. rows / keys / stage / num_warps are what a user asked
    for (None: the default); blocks are rounded up to a power of two and clamped to the largest
    that launches, and staging is forced where the unstaged kernel cannot launch."""
    rule = RULES[kernel][precision_class(dtype, precision)]
    must_stage = precision_class(dtype, precision) == "fp32" or (
        rule.stage_from_dim is not None and dim >= rule.stage_from_dim)
    return Settings(rows=_cap(rows, rule.rows, rule.max_rows, "block rows"),
                    keys=_cap(keys, rule.keys, rule.max_keys, "block keys") if rule.max_keys else 0,
                    stage=True if must_stage else bool(stage),
                    num_warps=num_warps or NUM_WARPS, num_stages=rule.num_stages)
