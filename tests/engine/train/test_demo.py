"""A short `seqpan demo` run: it builds the dataset, trains two epochs, reports its JSON line, and
its model grounds the held-out queries far better than the position-only baseline."""
from __future__ import annotations

import json

import pytest

from engine.cli import main

# Measured with seed 0 on the 2-core CPU machine: held-out R@1 IoU=0.5 0.550 after 2 epochs (0.706 after
# 3, 0.833 after the full demo) against the baseline's 0.319; 49 s to 2 min depending on the load.
MARGIN = 0.15


@pytest.mark.slow
def test_demo_beats_the_position_only_baseline(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--epochs", "2", "--json", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(lines[-1])
    keys = {"r1_iou03", "r1_iou05", "r1_iou07", "miou", "baseline_r1_iou05", "seconds"}
    assert keys <= set(summary)
    assert all(0.0 <= summary[k] <= 1.0 for k in keys - {"seconds"})
    assert summary["r1_iou03"] >= summary["r1_iou05"] >= summary["r1_iou07"]
    assert summary["r1_iou05"] >= summary["baseline_r1_iou05"] + MARGIN, summary
    assert summary["steps"] >= 1 and summary["test_queries"] > 500
    assert (out / "best.safetensors").is_file() and (out / "data" / "glove.txt").is_file()
    assert any("position-only baseline" in line for line in lines)
    assert any("predicted" in line for line in lines)
