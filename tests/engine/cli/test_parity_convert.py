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
    golden = load_golden(golden_path)
    lens = golden.arrays["in/video_len"].tolist()
    prefix = "out" if padding == "batch" else None
    expected_start = (golden.arrays["out/start_index"].tolist() if prefix else
                      [int(golden.arrays[f"alone/{b}/start_index"][0]) for b in range(len(lens))])
    assert result["start_index"] == expected_start
    assert [len(x) for x in result["start_logits"]] == lens and [len(x) for x in result["end_logits"]] == lens
    assert result["indices_equal"] is True and result["logits_rel_err"] <= 1e-4


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
