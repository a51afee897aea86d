"""A tiny `seqpan demo` run: it builds the dataset, trains briefly and reports its JSON line."""
from __future__ import annotations

import json

from engine.cli import main


def test_demo_json_line(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--seconds", "1", "--json", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(lines[-1])
    keys = {"r1_iou03", "r1_iou05", "r1_iou07", "miou", "baseline_r1_iou05", "seconds"}
    assert keys <= set(summary)
    assert all(0.0 <= summary[k] <= 1.0 for k in keys - {"seconds"})
    assert summary["steps"] >= 1 and summary["test_queries"] > 500
    assert (out / "best.safetensors").is_file() and (out / "data" / "glove.txt").is_file()
    assert any("position-only baseline" in line for line in lines)
    assert any("predicted" in line for line in lines)
