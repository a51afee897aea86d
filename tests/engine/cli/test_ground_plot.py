"""`seqpan ground --plot`: the probabilities it draws are those the engine's answer is decoded from,
the picture is written (atomically) without changing the printed answer, and every way it cannot be
drawn is a one-line error before any work."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from engine import GroundingEngine, GroundingRequest
from engine.io.checkpoint import save_checkpoint
from engine.probabilities import span_probabilities
from engine.prepare import prepare_request
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT
from tests.helpers import run_cli

QUERIES = ["person opens the door", "a person sits on a chair", "someone walks away"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    ckpt = save_checkpoint(root / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    np.save(root / "v.npy", np.random.default_rng(3).standard_normal((50, CFG.visual_dim)).astype(np.float32))
    return root, ckpt


@pytest.mark.parametrize("clips", [1, 7, 50, 3 * CFG.max_pos_len])
def test_the_probabilities_decode_to_the_engines_answer(clips):
    features = np.random.default_rng(clips).standard_normal((clips, CFG.visual_dim)).astype(np.float32)
    engine = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference")
    for query in QUERIES:
        request = GroundingRequest(features, query, 20.0)
        answer = engine.ground([request])[0]
        p_start, p_end = span_probabilities(MODEL, prepare_request(request, CFG, WORD_DICT, CHAR_DICT, {}))
        assert p_start.shape == p_end.shape == (min(clips, CFG.max_pos_len),)
        assert p_start.sum() == pytest.approx(1) and p_end.sum() == pytest.approx(1)
        joint = np.triu(np.outer(p_start, p_end))
        assert np.unravel_index(joint.argmax(), joint.shape) == (answer.start_index, answer.end_index)
        assert joint.max() == pytest.approx(answer.score, rel=1e-5)


def test_plot_is_written_and_the_answer_is_unchanged(setup, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install -e '.[bench]')")
    root, ckpt = setup
    args = ["ground", "--checkpoint", str(ckpt), "--features", str(root / "v.npy"), "--query", QUERIES[0],
            "--duration", "31.5", "--top-k", "3"]
    plain = run_cli(*args)
    for name, magic in (("moment.png", b"\x89PNG"), ("moment.svg", b"<?xml"), ("moment.pdf", b"%PDF")):
        drawn = run_cli(*args, "--plot", str(tmp_path / name))
        assert drawn.returncode == 0, drawn.stderr
        assert json.loads(drawn.stdout) == json.loads(plain.stdout)
        assert (tmp_path / name).read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moment.pdf", "moment.png", "moment.svg"]  # no leftovers


def test_plot_draws_the_answer_and_the_top_k_spans(setup, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install -e '.[bench]')")
    from matplotlib.figure import Figure

    root, ckpt = setup
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    result = run_cli("ground", "--checkpoint", str(ckpt), "--features", str(root / "v.npy"), "--query", QUERIES[1],
                     "--duration", "31.5", "--top-k", "4", "--plot", str(tmp_path / "m.png"))
    assert result.returncode == 0, result.stderr
    moments = json.loads(result.stdout)["moments"]
    (axes,) = saved[0].axes
    spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in axes.patches if type(p).__name__ == "Rectangle")
    assert len(spans) == len(moments) == 4
    assert np.allclose(spans, sorted((m["start"], m["end"]) for m in moments))
    steps = [p for p in axes.patches if type(p).__name__ == "StepPatch"]
    assert [s.get_label() for s in steps] == ["p(start)", "p(end)"]
    assert steps[0].get_data().edges[-1] == pytest.approx(31.5)


def test_what_cannot_be_plotted_is_one_line_before_any_work(setup, tmp_path, monkeypatch):
    root, ckpt = setup
    one = ["ground", "--checkpoint", str(ckpt), "--features", str(root / "v.npy"), "--query", "door", "--duration", "9"]
    cases = [
        (one + ["--plot", str(tmp_path / "m.txt")], "give a .png, .svg or .pdf file"),
        (one + ["--plot", str(root / "v.npy" / "m.png")], "v.npy"),  # its folder is a file
        (["ground", "--checkpoint", str(ckpt), "--requests", str(tmp_path / "r.jsonl"), "--out",
          str(tmp_path / "o.jsonl"), "--plot", str(tmp_path / "m.png")], "--plot draws one query"),
    ]
    cases.append((one + ["--plot", str(tmp_path / "m.png")], "--plot needs matplotlib: pip install -e '.[bench]'"))
    for args, message in cases:
        if message.startswith("--plot needs matplotlib"):
            monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
