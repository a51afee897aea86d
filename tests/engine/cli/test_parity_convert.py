"""`seqpan parity` and `seqpan convert-tf`, and checkpoints, through the real CLI."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.io.checkpoint import load_checkpoint, save_checkpoint, weights_hash
from engine.io.golden import golden_model, load_golden
from tests.conftest import COMPACT_GOLDEN
from tests.helpers import GOLDEN_RTOL, assert_logits_match_golden
from tests.helpers import run_cli as seqpan


def test_console_entry_point_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "parity", "--golden", str(COMPACT_GOLDEN), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["indices_equal"] is True


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_parity_json_contract(golden_path, padding):
    proc = seqpan("parity", "--golden", str(golden_path), "--backend", "reference", "--padding", padding, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected = recorded_outputs(load_golden(golden_path), padding)
    assert result["start_index"] == expected["start_index"] and result["end_index"] == expected["end_index"]
    for key in ("start_logits", "end_logits"):  # the golden's own numbers, not the command's verdict
        assert_logits_match_golden(result[key], expected[key], key)
    assert result["indices_equal"] is True and result["logits_rel_err"] <= GOLDEN_RTOL


def recorded_outputs(golden, padding: str) -> dict:
    """The original's indices and per-sample valid logits, read straight from the golden's arrays."""
    a = golden.arrays
    lens = a["in/video_len"].tolist()
    if padding == "batch":
        return {"start_index": a["out/start_index"].tolist(), "end_index": a["out/end_index"].tolist(),
                **{key: [a[f"mid/conditioned_predictor:predictor#{i}@0"][b, :n] for b, n in enumerate(lens)]
                   for i, key in enumerate(("start_logits", "end_logits"))}}
    return {key: [a[f"alone/{b}/{key}"].reshape(-1)[0] if key.endswith("index") else a[f"alone/{b}/{key}"][0]
                  for b in range(len(lens))] for key in ("start_index", "end_index", "start_logits", "end_logits")}


def rewrite_golden(src, dst, change) -> None:
    """Copy a golden with `change(arrays)` applied to its dict of arrays."""
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    change(arrays)
    np.savez(dst, **arrays)


def shift_end_index(arrays) -> None:
    """Record another end for sample 0 than the original's."""
    lens = arrays["in/video_len"]
    arrays["out/end_index"] = arrays["out/end_index"].copy()
    arrays["out/end_index"][0] = (arrays["out/end_index"][0] + 1) % lens[0]


def scale_start_logits(arrays) -> None:
    """Record start logits 3e-4 off, relatively (past the command's 1e-4): indices unchanged."""
    key = "mid/conditioned_predictor:predictor#0@0"
    arrays[key] = arrays[key] * np.float32(1 + 3e-4)


def drop_outputs(arrays) -> None:
    """A golden of inputs and weights only: no out/*, alone/* or predictor logits recorded."""
    for key in [k for k in arrays if k.startswith(("out/", "alone/", "mid/conditioned_predictor:"))]:
        del arrays[key]


@pytest.mark.parametrize("change, indices_equal", [(shift_end_index, False), (scale_start_logits, True)])
def test_parity_exits_1_when_the_backend_disagrees_with_the_golden(tmp_path, change, indices_equal):
    golden = tmp_path / "changed.npz"
    rewrite_golden(COMPACT_GOLDEN, golden, change)
    proc = seqpan("parity", "--golden", str(golden), "--backend", "reference", "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["indices_equal"] is indices_equal
    assert (result["logits_rel_err"] > 1e-4) is indices_equal
    text = seqpan("parity", "--golden", str(golden), "--backend", "reference")
    assert text.returncode == 1 and f"indices equal: {indices_equal}" in text.stdout


def test_parity_on_a_golden_without_recorded_outputs_reports_outputs_only(tmp_path):
    """Nothing to compare with: exit 0, the backend's outputs, and no verdict."""
    golden = tmp_path / "inputs-only.npz"
    rewrite_golden(COMPACT_GOLDEN, golden, drop_outputs)
    proc = seqpan("parity", "--golden", str(golden), "--backend", "reference", "--padding", "isolated", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "indices_equal" not in result and "logits_rel_err" not in result
    expected = recorded_outputs(load_golden(COMPACT_GOLDEN), "isolated")
    assert result["start_index"] == expected["start_index"] and result["end_index"] == expected["end_index"]
    text = seqpan("parity", "--golden", str(golden), "--backend", "reference")
    assert text.returncode == 0 and "indices equal" not in text.stdout and "start_index" in text.stdout


def write_vocab(path, num_words: int, num_chars: int, extra_words: int = 0):
    words = {"<PAD>": 0, "<UNK>": 1, **{f"w{i}": i + 2 for i in range(num_words - 2 + extra_words)}}
    chars = {"<PAD>": 0, "<UNK>": 1, **{chr(97 + i): i + 2 for i in range(num_chars - 2)}}
    with open(path, "wb") as f:
        pickle.dump({"word_dict": words, "char_dict": chars, "train_set": []}, f)


def test_convert_tf_from_golden_round_trips(tmp_path):
    golden = load_golden(COMPACT_GOLDEN)
    cfg = golden_model(golden).cfg
    write_vocab(tmp_path / "vocab.pkl", cfg.num_words, cfg.num_chars)
    out = tmp_path / "model.safetensors"
    proc = seqpan("convert-tf", str(COMPACT_GOLDEN), "--vocab", str(tmp_path / "vocab.pkl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(out)
    assert weights_hash(ckpt.model) == weights_hash(golden_model(golden))
    assert ckpt.word_dict["w0"] == 2 and ckpt.model.cfg.max_pos_len == golden.meta["max_pos_len"]


def test_convert_tf_refuses_vocab_of_other_size(tmp_path):
    cfg = golden_model(load_golden(COMPACT_GOLDEN)).cfg
    write_vocab(tmp_path / "vocab.pkl", cfg.num_words, cfg.num_chars, extra_words=3)
    out = tmp_path / "model.safetensors"
    proc = seqpan("convert-tf", str(COMPACT_GOLDEN), "--vocab", str(tmp_path / "vocab.pkl"), "--out", str(out))
    assert proc.returncode == 2 and "do not fit" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def drop_key(src, dst, key):
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files if k != key}
    np.savez(dst, **arrays)


def reshape_key(src, dst, key):
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    arrays[key] = arrays[key][:, :-1]
    np.savez(dst, **arrays)


@pytest.mark.parametrize("make, message", [
    (lambda src, dst: drop_key(src, dst, "var/q2v_attn/dense/kernel"), "missing TF variable 'q2v_attn/dense/kernel'"),
    (lambda src, dst: drop_key(src, dst, "in/word_ids"), "lacks in/word_ids"),
    (lambda src, dst: reshape_key(src, dst, "var/predictor/start_hidden/kernel"), "predictor/start_hidden/kernel"),
    (lambda src, dst: reshape_key(src, dst, "in/char_ids"), "disagree in shape"),
    (lambda src, dst: dst.write_bytes(b"not a zip"), "cannot read golden file"),
    (lambda src, dst: None, "not found"),
])
def test_bad_golden_files_give_one_line_errors(tmp_path, make, message):
    bad = tmp_path / "bad.npz"
    make(COMPACT_GOLDEN, bad)
    proc = seqpan("parity", "--golden", str(bad), "--json")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


def test_checkpoint_errors(tmp_path):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(corrupt)
    model = golden_model(load_golden(COMPACT_GOLDEN))
    good = save_checkpoint(tmp_path / "good.safetensors", model, {"<PAD>": 0}, {"<PAD>": 0})
    assert torch.equal(load_checkpoint(good).model.q2v.w_mul, model.q2v.w_mul)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(truncated)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_convert_tf_checkpoint_dir_without_tensorflow(tmp_path):
    pytest.importorskip("numpy")
    try:
        import tensorflow  # noqa: F401
        pytest.skip("tensorflow is installed; this checks the message given without it")
    except ImportError:
        pass
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps({"word_dict": {}, "char_dict": {}}))
    proc = seqpan("convert-tf", str(tmp_path), "--vocab", str(tmp_path / "vocab.pkl"), "--out",
                  str(tmp_path / "m.safetensors"))
    assert proc.returncode == 2 and "needs tensorflow" in proc.stderr


def test_triton_parity_on_cpu_chooses_the_interpreter_itself():
    """A user on a CPU machine need not know about TRITON_INTERPRET: the backend sets it."""
    import os

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the kernels run compiled there")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "parity", "--golden", str(COMPACT_GOLDEN),
                           "--backend", "triton", "--padding", "isolated", "--json"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["indices_equal"] is True


def test_user_errors_have_no_traceback_when_run_as_a_program(tmp_path):
    """Under `python -m engine.cli` the module is loaded twice; errors must still be caught."""
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "ground", "--checkpoint", str(tmp_path / "m.safetensors"),
                           "--features", "f.npy", "--query", "q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "give --features" in proc.stderr and "Traceback" not in proc.stderr
