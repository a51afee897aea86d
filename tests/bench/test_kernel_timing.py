"""bench.kernel_timing: its byte/FLOP accounting (checked by hand and against torch's FLOP
counter on the reference blocks) and a smoke run of the harness (under the interpreter on CPU)."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.kernel_timing import BLOCKS, Shape, block_cost, build_case, main, run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = Shape(batch=2, video_len=3, query_len=2, dim=16, num_heads=1, conv_kernel=3, conv_layers=1)


def test_costs_by_hand():
    # conv: x in + out (2·2·3·16·2 B) + mask (6) + one layer's 16² bf16 kernel and (3 taps + 3 vectors)·16 fp32
    assert block_cost("conv_block", SMALL, 2) == dict(bytes=384 + 6 + 512 + 384, flops=2 * 3 * (2 * 3 * 16 + 2 * 256))
    # cqa, one direction with c rows lc and q rows lq: 8·lc·lq·d + 2·(lc + lq)·d + 8·lc·d²
    q2v, v2q = 8 * 6 * 16 + 2 * 5 * 16 + 8 * 3 * 256, 8 * 6 * 16 + 2 * 5 * 16 + 8 * 2 * 256
    moved = 2 * (2 * 5 * 16 * 2 + 2 * 5 + 4 * 256 * 2 + 3 * 16 * 4) + 2 * 5 * 16 * 2 + 2 * 2 * 6 * 2
    assert block_cost("cqa", SMALL, 2) == dict(bytes=moved, flops=2 * (q2v + v2q))
    # pool-concat: x in/out and y in (2·(2·3 + 2)·16·4 B), mask, [x | pooled] dense (2·16² + 2·16 fp32)
    assert block_cost("pool_concat", SMALL, 4) == dict(bytes=1024 + 4 + 2048 + 128,
                                                       flops=2 * (2 * 3 * 256 + 2 * 256 + 4 * 2 * 16))
    assert block_cost("span", SMALL, 4) == dict(bytes=2 * 6 * 4 + 6 + 2 * 20, flops=60)
    with pytest.raises(ValueError, match="unknown block"):
        block_cost("lstm", SMALL, 4)


@pytest.mark.parametrize("block", ["conv_block", "sgpa"])
def test_flops_match_torch_flop_counter(block):
    """The reference conv block and SGPA layer do exactly the counted matmul/conv work."""
    case = build_case(block, SMALL, torch.float32, "cpu")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        case.reference(*case.args)
    assert counter.get_total_flops() == block_cost(block, SMALL, 4)["flops"]


def test_smoke_run():
    report = run(Shape(batch=2, video_len=40, query_len=3), dtypes=("fp32",), compile_reference=False, warmup=0,
                 iters=1, device=DEVICE, block_caps=(32,))
    json.dumps(report)
    assert [row["block"] for row in report["results"]] == list(BLOCKS)
    for row in report["results"]:
        assert row["fused_rel_error"] <= 1e-4, row
        assert row["fused"]["ms"] > 0 and row["reference"]["gb_per_s"] > 0
        capped = row.get("fused_capped", {}).get("32")  # 40 clips: two row blocks, conv tiles with halos
        assert (capped is None) == (row["block"] == "span")
        assert capped is None or (capped["ms"] > 0 and capped["rel_error"] <= 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cli_refuses_without_gpu(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--batch", "2"])
    assert exit_info.value.code == 2 and "CUDA" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_harness(tmp_path):
    out = tmp_path / "timing.json"
    main(["--batch", "64", "--dtypes", "bf16", "--no-compile", "--warmup", "2", "--iters", "5", "--out", str(out)])
    report = json.loads(out.read_text())
    assert all(row["fused_rel_error"] <= 2e-2 for row in report["results"])
