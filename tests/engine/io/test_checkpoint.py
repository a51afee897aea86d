"""Checkpoints as untrusted files (issue #11, item 7): metadata, vocabularies, dtypes and shapes are
checked before a model is allocated, weights must be finite, and a content hash catches corruption."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine import GroundingEngine, GroundingRequest
from engine.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)


def rewrite(src, dst, meta_change=None, tensor_change=None):
    """A copy of checkpoint `src` with metadata fields replaced (JSON values are dumped) and tensors
    changed, written by safetensors itself without a content hash, as an older seqpan (or someone
    who dropped the hash) would."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    meta.pop("content_sha256", None)
    for key, value in (meta_change or {}).items():
        if key.startswith("config."):
            config = json.loads(meta["config"])
            config[key.split(".", 1)[1]] = value
            meta["config"] = json.dumps(config)
        elif value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = load_file(str(src))
    if tensor_change:
        tensors = tensor_change(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_saved_checkpoint_carries_a_hash_and_round_trips(saved):
    with safe_open(str(saved), framework="pt") as f:
        assert len(f.metadata()["content_sha256"]) == 64
    ckpt = load_checkpoint(saved)
    assert (ckpt.word_dict, ckpt.char_dict) == (WORD_DICT, CHAR_DICT)
    for name, value in MODEL.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], value)


@pytest.mark.parametrize("change, message", [
    ({"word_dict": ["<PAD>", "<UNK>"]}, "word_dict is not a JSON object"),
    ({"word_dict": {**WORD_DICT, "evil": -1}}, "not an id in [0, 40)"),
    ({"word_dict": {**WORD_DICT, "evil": CFG.num_words}}, "not an id in [0, 40)"),
    ({"word_dict": {**WORD_DICT, "evil": "3"}}, "not an id"),
    ({"word_dict": {**WORD_DICT, "evil": 2.0}}, "not an id"),
    ({"char_dict": {**CHAR_DICT, "é": 10**6}}, "not an id in [0, 30)"),
    ({"word_dict": "[" * 100_000}, "not valid JSON"),
    ({"config.num_words": 1e9}, "num_words must be an integer"),
    ({"config.num_words": 10**12}, "num_words must be an integer in [2, 10000000]"),  # 48 TB of embeddings
    ({"config.word_dim": 10**9}, "word_dim must be an integer"),
    ({"config.dim": -4}, "dim must be an integer"),
    ({"config.num_heads": 0}, "num_heads must be an integer"),
    ({"config.num_heads": 5}, "not a multiple"),
    ({"config.conv_kernel": 6}, "odd"),
    ({"config.char_kernels": [1, 2, 3, 9]}, "char_kernels"),
    ({"config.tau": float("nan")}, "tau"),
    ({"config.drop_rate": True}, "drop_rate"),
    ({"config.max_pos_len": "64"}, "max_pos_len"),
    ({"config.surprise": 1}, "unknown keys"),
    ({"config": "[]"}, "config is not a JSON object"),
    ({"format": None}, "not a seqpan checkpoint"),
    ({"extra": [1]}, "extra"),
])
def test_issue11_7_metadata_is_checked_before_allocation(saved, tmp_path, change, message, monkeypatch):
    """Issue #11 (7): a word_dict that is a list, negative, out-of-range or string ids, num_words=1e9
    (which allocated 1.2 TB before any shape check), dim=-4: tracebacks at load or ground time."""
    import engine.io.checkpoint as checkpoint

    bad = rewrite(saved, tmp_path / "bad.safetensors", meta_change=change)
    built = []
    monkeypatch.setattr(checkpoint, "SeqPAN", lambda cfg: built.append(torch.empty(0).device) or MODEL.__class__(cfg))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert all(device.type == "meta" for device in built)  # nothing was built for real before refusing


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_issue11_7_integer_weights_are_refused(saved, tmp_path, dtype):
    """Issue #11 (7): int32 weights were accepted and gave nonsense."""
    bad = rewrite(saved, tmp_path / "int.safetensors", tensor_change=lambda t: {k: v.to(dtype) for k, v in t.items()})
    with pytest.raises(CheckpointError, match="has dtype"):
        load_checkpoint(bad)


def test_issue11_7_wrong_shapes_and_names_are_refused(saved, tmp_path):
    def grow(tensors):
        tensors["q2v.w_mul"] = torch.zeros(*tensors["q2v.w_mul"].shape, 2)
        return tensors

    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(rewrite(saved, tmp_path / "shape.safetensors", tensor_change=grow))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(rewrite(saved, tmp_path / "extra.safetensors",
                                tensor_change=lambda t: {**t, "backdoor": torch.zeros(1)}))


def test_issue11_6_non_finite_weights_are_refused(saved, tmp_path):
    """Issue #11 (6): NaN weights loaded and gave `"score": NaN`."""
    def poison(tensors):
        tensors["predictor.start_dense.bias"] = torch.full_like(tensors["predictor.start_dense.bias"], float("nan"))
        return tensors

    with pytest.raises(CheckpointError, match="predictor.start_dense.bias holds NaN or inf"):
        load_checkpoint(rewrite(saved, tmp_path / "nan.safetensors", tensor_change=poison))


def test_issue11_7_bit_flips_are_detected(saved, tmp_path):
    """Issue #11 (7): a bit-flipped checkpoint loaded silently. Flips in the tensor data, the
    vocabularies, the config, the hash and the hash's key (which would drop the hash) are refused."""
    body = saved.read_bytes()
    header_len = int.from_bytes(body[:8], "little")
    header = body[8: 8 + header_len]
    offsets = [8 + header_len + 5, len(body) - 1, 8 + header.index(b"opens") + 1, 8 + header.index(b"tau") + 8,
               8 + header.index(b"content_sha256") + 20, 8 + header.index(b"content_sha256") + 2, 3]
    for offset in offsets:
        flipped = bytearray(body)
        flipped[offset] ^= 0x04
        path = tmp_path / "flipped.safetensors"
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_old_checkpoint_without_hash_loads_with_a_warning(saved, tmp_path, caplog):
    old = rewrite(saved, tmp_path / "old.safetensors")
    with caplog.at_level(logging.WARNING, logger="seqpan"):
        ckpt = load_checkpoint(old)
    assert "has no content hash" in caplog.text
    request = GroundingRequest(np.ones((6, CFG.visual_dim), np.float32), "person opens the door", 9.0)
    a = GroundingEngine(ckpt.model, ckpt.word_dict, ckpt.char_dict, device="cpu").ground([request])[0]
    b = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu").ground([request])[0]
    assert a.to_json() == b.to_json()
