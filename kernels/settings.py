"""Launch parameters of every kernel, chosen in one place per kernel, dtype and shape (as
Liger-Kernel's `calculate_settings`), with what users may ask for clamped to what launches.

The limits come from compiling every configuration for sm_90 (H100/H200: 232,448 B of shared
memory per block) with Triton's own compiler: see `kernels.cross_compile` and
bench/results/kernel-resources-sm90.md. tests/kernels/test_resources.py keeps them true.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton

KERNELS = ("conv_block", "sgpa", "cqa", "pool_concat")
MIN_BLOCK = 16  # tl.dot needs 16 or more rows and columns
# Triton picks its interpreter when a function is decorated, from TRITON_INTERPRET; so do we.
INTERPRETED = bool(triton.knobs.runtime.interpret)
INTERPRETER_MAX_BLOCK = 256  # interpreted, nothing is compiled: larger (so fewer) programs run faster


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
    Triton's launch options (num_stages is the depth of software pipelining of loop loads); dot:
    the dots' input precision, "tf32" or "ieee" (bf16 and fp16 dots are exact products).
    """
    rows: int
    keys: int
    stage: bool
    num_warps: int
    num_stages: int
    dot: str

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
    """Defaults and limits of one kernel at one precision class. The limits are for dims up to
    REFERENCE_DIM; above it they halve with every doubling of the dim (a tile's row holds dim
    values), and the defaults never exceed them."""
    rows: int  # default row cap (a power of two)
    keys: int  # default key cap (0: the kernel has no key loop)
    max_rows: int  # the largest row cap a user may ask for
    max_keys: int


# kernel -> precision class -> rule. Limits hold every configuration within 232,448 B of shared
# memory and SPILL_BUDGET of stack per thread on sm_90 (kernels.cross_compile, measured in
# bench/results/kernel-resources-sm90.md); e.g. IEEE fp32 SGPA with 64-row blocks needs 327,680 B.
RULES: dict[str, dict[str, Rule]] = {
    "conv_block": {"fp32": Rule(64, 0, 128, 0), "tf32": Rule(64, 0, 128, 0), "half": Rule(64, 0, 128, 0)},
    "sgpa": {"fp32": Rule(32, 32, 32, 32), "tf32": Rule(32, 32, 32, 32), "half": Rule(64, 64, 64, 64)},
    "cqa": {"fp32": Rule(32, 32, 32, 32), "tf32": Rule(32, 32, 32, 32), "half": Rule(64, 32, 64, 64)},
    "pool_concat": {"fp32": Rule(64, 64, 64, 64), "tf32": Rule(64, 64, 64, 64), "half": Rule(64, 64, 64, 64)},
}
REFERENCE_DIM = 128  # the dim the rules' blocks are for (SeqPAN's)
NUM_WARPS = 8
STAGE_K = 32  # K chunk of a staged matmul (kernels.common.matmul)
WHOLE_WEIGHT_BYTES = 64 * 1024  # larger [dim, dim] weights are always staged (256 KiB for fp32 at dim 256)
PIPELINE_BYTES = 128 * 1024  # weight bytes that Triton's loop pipelining may hold in flight
MAX_STAGES = 3  # Triton's default pipelining depth


def _scaled(cap: int, dim: int) -> int:
    """A block cap for REFERENCE_DIM, halved for every doubling of dim above it (at least MIN_BLOCK)."""
    return max(MIN_BLOCK, cap * REFERENCE_DIM // max(dim, REFERENCE_DIM))


def _cap(asked: int | None, default: int, largest: int, name: str) -> int:
    if asked is None:
        return min(default, largest)
    if asked < 1:
        raise ValueError(f"{name} must be positive, got {asked}")
    return block_size(asked, largest)


def calculate_settings(kernel: str, dtype: torch.dtype, precision: str, dim: int, rows: int | None = None,
                       keys: int | None = None, stage: bool | None = None, num_warps: int | None = None,
                       interpreted: bool = INTERPRETED) -> Settings:
    """The launch settings of `kernel` (one of KERNELS) for `dtype` tensors, dot `precision`
    ("ieee" or "tf32") and model `dim`. rows / keys / stage / num_warps are what a user asked
    for (None: the default): blocks are rounded up to a power of two and clamped to the largest
    that launch at this dim (`interpreted`: to INTERPRETER_MAX_BLOCK); staging is forced where an
    unstaged kernel cannot launch or compile (IEEE fp32: a compiled fp32 dot over a whole weight
    is minutes of unrolled FMAs; weights over WHOLE_WEIGHT_BYTES); the pipelining depth keeps
    the weights in flight within PIPELINE_BYTES."""
    cls = precision_class(dtype, precision)
    rule = RULES[kernel][cls]
    if interpreted:
        rule = replace(rule, max_rows=INTERPRETER_MAX_BLOCK, max_keys=rule.keys and INTERPRETER_MAX_BLOCK)
    weight = dim * dim * dtype.itemsize
    stage = cls == "fp32" or weight > WHOLE_WEIGHT_BYTES or bool(stage)
    in_flight = STAGE_K * dim * dtype.itemsize if stage else weight
    return Settings(rows=_cap(rows, rule.rows, _scaled(rule.max_rows, dim), "block rows"),
                    keys=_cap(keys, rule.keys, _scaled(rule.max_keys, dim), "block keys") if rule.keys else 0,
                    stage=stage, num_warps=num_warps or NUM_WARPS,
                    num_stages=max(1, min(MAX_STAGES, PIPELINE_BYTES // in_flight)),
                    dot="tf32" if cls == "tf32" else "ieee")
