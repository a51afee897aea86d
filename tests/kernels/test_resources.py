"""Every kernel compiles for sm_90 (H100/H200) with Triton's own compiler, here without a GPU,
within the shared memory a block may use and the spill budget (kernels.cross_compile).

CI compiles the largest configuration of each kernel that kernels.settings lets a user ask for,
per precision class, at SeqPAN's dim and at dim 256: the blocks, the tiles they fill and the
weights in flight are largest there. `python -m bench.kernel_resources` compiles every default
configuration (bench/results/kernel-resources-sm90.md); tests/kernels/test_*.py check the dim-16
and staged paths' numbers on CPU.
"""
from __future__ import annotations

import os

import pytest

from kernels.cross_compile import H100_SHARED_MEMORY, KERNELS, Call, module_calls, probe
from kernels.settings import Settings

pytestmark = pytest.mark.slow

# The settings the conv block had before: tf32, unstaged, 64-row tiles, Triton's default pipelining
# depth of 3 (three 64 KiB weights in flight).
OLD_TF32_CONV = Call("conv_block", "tf32", 128, (65, 1),
                     settings=tuple(vars(Settings(rows=64, keys=0, stage=False, num_warps=8, num_stages=3,
                                                   dot="tf32")).items()))


def largest_calls() -> list[Call]:
    """The largest blocks of each kernel at dims 128 and 256, fp32 / tf32 / bf16 (fp16 compiles the
    same code at bf16's width), with their default staging; the conv block masked (isolated padding)."""
    return [call for precision in ("fp32", "tf32", "bf16") for module in KERNELS for dim in (128, 256)
            for call in module_calls(module, precision, dim, largest=True) if call.masked]


@pytest.fixture(scope="module")
def compiled():
    calls = [*largest_calls(), *module_calls("span", "bf16", 0), OLD_TF32_CONV]
    records, failed = probe(calls, workers=min(2, os.cpu_count() or 1), timeout=900)
    assert not failed, failed
    return records


def test_largest_configurations_fit_sm90(compiled):
    fits = [r for r in compiled if OLD_TF32_CONV not in r.calls]
    assert {r.kernel for r in fits} == {"_conv_block_kernel", "_sgpa_kernel", "_ln_kv_kernel", "_cqa_kernel",
                                        "_column_context_kernel", "_pool_concat_kernel", "_decode_span_kernel"}
    assert {(r.constants.get("D"), r.dtype) for r in fits if r.kernel == "_sgpa_kernel"} == {
        (128, "*fp32"), (256, "*fp32"), (128, "*bf16"), (256, "*bf16")}
    over = [f"{r.kernel} {r.dtype} {r.constants} num_stages={r.num_stages}: {'; '.join(r.over_limits())}"
            for r in fits if r.over_limits()]
    assert not over, "\n".join(over)


def test_probe_sees_what_cannot_launch(compiled):
    """The conv block's old tf32 settings need more shared memory than sm_90 has (Triton's
    launcher raises OutOfResources), and the probe reports it."""
    (old,) = [r for r in compiled if OLD_TF32_CONV in r.calls]
    assert old.num_stages == 3 and old.shared > H100_SHARED_MEMORY
    assert old.over_limits() == [f"shared memory {old.shared} B > {H100_SHARED_MEMORY} B"]
