"""`seqpan ground`: one query, a JSONL file, and every kind of bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine import GroundingEngine, GroundingRequest
from engine.io.checkpoint import save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ground")
    ckpt = save_checkpoint(root / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    gen = np.random.default_rng(0)
    for name, clips in (("a", 20), ("b", 70), ("c", 1)):
        np.save(root / f"{name}.npy", gen.standard_normal((clips, CFG.visual_dim)).astype(np.float32))
    np.save(root / "nan.npy", np.full((4, CFG.visual_dim), np.nan, np.float32))
    return root, ckpt


def test_single_query_prints_json(setup):
    root, ckpt = setup
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--features", str(root / "a.npy"),
                   "--query", "person opens the door", "--duration", "31.5")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu")
    expected = engine.ground([GroundingRequest(str(root / "a.npy"), "person opens the door", 31.5)])[0]
    assert result["start_index"] == expected.start_index and result["end_index"] == expected.end_index
    assert result["start"] == pytest.approx(expected.start) and 0 <= result["start"] <= result["end"] <= 31.5


def test_requests_file_keeps_order_and_reports_bad_lines(setup):
    root, ckpt = setup
    lines = [
        json.dumps({"features": "a.npy", "query": "person opens the door", "duration": 30, "id": "q1"}),
        "{not json",
        json.dumps({"features": "b.npy", "query": "a person sits on chair", "duration": 80.0}),
        "",
        json.dumps({"features": "nan.npy", "query": "walks into room", "duration": 10, "id": "bad-features"}),
        json.dumps({"features": "c.npy", "query": "takes book", "id": "no-duration"}),
        json.dumps({"features": "c.npy", "query": "   ", "duration": 5, "id": "empty"}),
        json.dumps({"features": str(root / "c.npy"), "query": "zebra", "duration": 5, "id": "unk"}),
    ]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "out.jsonl"
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "in.jsonl"), "--out", str(out))
    assert proc.returncode == 1  # some requests failed; the others are served
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in results] == ["q1", None, 3, "bad-features", "no-duration", "empty", "unk"]
    assert "start" in results[0] and "start" in results[2] and "start" in results[6]
    assert results[1]["error"].startswith("line 2:")
    assert "NaN" in results[3]["error"] and "duration" in results[4]["error"] and "empty" in results[5]["error"]
    assert "Traceback" not in proc.stderr and "line 2" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{root}/missing.safetensors", "--features", "{root}/a.npy", "--query", "x", "--duration", "3"],
     "checkpoint not found"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "x"], "give --features"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "  ", "--duration", "3"], "empty"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "door", "--duration", "0"], "positive"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/nan.npy", "--query", "door", "--duration", "3"], "NaN"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/zzz.npy", "--query", "door", "--duration", "3"], "not found"),
    (["--checkpoint", "{ckpt}", "--requests", "{root}/none.jsonl", "--out", "{root}/o.jsonl"], "not found"),
    (["--checkpoint", "{root}/a.npy", "--features", "{root}/a.npy", "--query", "x", "--duration", "3"], "corrupt"),
])
def test_user_errors_are_one_line_with_nonzero_exit(setup, args, message):
    root, ckpt = setup
    proc = run_cli("ground", *[a.format(root=root, ckpt=ckpt) for a in args])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "" and not (root / "o.jsonl").exists()
