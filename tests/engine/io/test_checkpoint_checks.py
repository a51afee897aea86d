"""The checks of engine/io/checkpoint.py one by one, at their boundaries, against values worked out
by hand: the safetensors header, the content hash, the config's ranges, the vocabularies, the
tensors, the weights hash, and the one-line errors of load_checkpoint."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from engine.io.checkpoint import (
    CheckpointError,
    check_config,
    check_metadata,
    check_tensors,
    check_vocab,
    content_hash,
    load_checkpoint,
    parse_field,
    read_header,
    save_checkpoint,
    weights_hash,
)
from reference.config import SeqPANConfig
from reference.testing import random_model
from tests.engine.io.test_checkpoint import rewrite
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT

BASE = json.loads(CFG.to_json())


def refused(call, message: str) -> None:
    """`call` raises CheckpointError whose text is exactly `message`."""
    with pytest.raises(CheckpointError) as info:
        call()
    assert str(info.value) == message


def header_body(header: bytes, data: bytes = b"", size: int | None = None) -> bytes:
    return (len(header) if size is None else size).to_bytes(8, "little") + header + data


def test_read_header_gives_the_json_and_where_the_data_starts():
    assert read_header(header_body(b'{"a": 1}', b"DATA")) == ({"a": 1}, 16)
    assert read_header(header_body(b"{}")) == ({}, 10)  # the header fills the body exactly
    assert read_header(header_body('{"é": "ü"}'.encode())) == ({"é": "ü"}, 8 + len('{"é": "ü"}'.encode()))


@pytest.mark.parametrize("body, reason", [
    (b"", "too short"), (b"\x02\x00\x00\x00\x00\x00\x00", "too short"),
    (header_body(b"{}", size=3), "bad header length"),          # one byte more than there is
    (header_body(b"{}", size=2**63), "bad header length"),
    (header_body(b""), "malformed header"),                      # 8 bytes: an empty header
    (header_body(b"[]"), "malformed header"), (header_body(b'"{}"'), "malformed header"),
    (header_body(b"{'a': 1}"), "malformed header"), (header_body(b'{"a": "\xff"}'), "malformed header"),
    (header_body(b"[" * 100_000), "malformed header"),
])
def test_read_header_refuses_what_is_not_a_safetensors_header(body, reason):
    refused(lambda: read_header(body), f"corrupt or not a safetensors file ({reason})")


def test_content_hash_is_sha256_of_the_sorted_metadata_without_itself_then_the_data():
    meta = {"format": "f", "config": "{}", "content_sha256": "anything"}
    expected = hashlib.sha256(b'{"config": "{}", "format": "f"}' + b"\x00\x01data").hexdigest()  # by hand
    assert content_hash(meta, b"\x00\x01data") == expected
    assert content_hash(meta, memoryview(b"xx\x00\x01data")[2:]) == expected
    assert content_hash({**meta, "content_sha256": "other"}, b"\x00\x01data") == expected
    assert content_hash({**meta, "extra": "{}"}, b"\x00\x01data") != expected


def test_the_saved_hash_covers_metadata_and_data(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT, {"epoch": 3})
    body = path.read_bytes()
    header, start = read_header(body)
    meta = header["__metadata__"]
    assert meta["content_sha256"] == content_hash(meta, body[start:])
    assert set(meta) == {"format", "config", "word_dict", "char_dict", "extra", "content_sha256"}
    assert (meta["format"], json.loads(meta["extra"]), json.loads(meta["word_dict"])) == \
        ("seqpan-checkpoint-v1", {"epoch": 3}, WORD_DICT)
    ckpt = load_checkpoint(path)
    assert (ckpt.word_dict, ckpt.char_dict, ckpt.extra, ckpt.model.training) == \
        (WORD_DICT, CHAR_DICT, {"epoch": 3}, False)
    assert ckpt.model.cfg == CFG and next(ckpt.model.parameters()).device.type == "cpu"
    assert load_checkpoint(save_checkpoint(tmp_path / "n.safetensors", MODEL, WORD_DICT, CHAR_DICT)).extra == {}


def test_a_changed_hash_is_refused_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    body = bytearray(path.read_bytes())
    at = body.index(b"content_sha256") + len('content_sha256":"')
    body[at] = ord("0") if body[at] != ord("0") else ord("1")
    path.write_bytes(bytes(body))
    refused(lambda: load_checkpoint(path),
            f"checkpoint {path}: its content hash does not match: the file is corrupt or was modified")


def test_a_missing_file_is_named(tmp_path):
    refused(lambda: load_checkpoint(tmp_path / "none.safetensors"),
            f"checkpoint not found: {tmp_path / 'none.safetensors'}")
    refused(lambda: load_checkpoint(tmp_path), f"checkpoint not found: {tmp_path}")


def test_metadata_fields_and_their_defaults(tmp_path):
    saved = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    assert load_checkpoint(rewrite(saved, tmp_path / "a.safetensors", {"extra": None})).extra == {}
    for field in ("config", "word_dict", "char_dict"):
        path = rewrite(saved, tmp_path / f"{field}.safetensors", {field: None})
        refused(lambda: load_checkpoint(path), f"checkpoint {path}: metadata has no {field!r}")
    assert parse_field({"k": "[1]"}, "k") == [1] and parse_field({}, "k", "{}") == {}
    refused(lambda: parse_field({"k": "{"}, "k"), "metadata 'k' is not valid JSON")
    refused(lambda: parse_field({}, "k"), "metadata has no 'k'")


def test_check_metadata():
    good = {"format": "seqpan-checkpoint-v1", "config": "{}"}
    assert check_metadata(good) is good
    for meta in (None, [], {"format": 1}, {1: "x"}, {"format": "seqpan-checkpoint-v1", "config": {}}):
        refused(lambda: check_metadata(meta), "not a seqpan checkpoint (no metadata)")
    refused(lambda: check_metadata({"format": "seqpan-checkpoint-v2"}),
            "not a seqpan checkpoint (format 'seqpan-checkpoint-v2')")
    refused(lambda: check_metadata({}), "not a seqpan checkpoint (format 'None')")
    refused(lambda: check_metadata({"format": "x" * 50}), f"not a seqpan checkpoint (format {'x' * 40!r})")
    refused(lambda: check_metadata({**good, "z": "", "y": "", "b" * 50: "", "a": ""}),
            f"unknown metadata keys ['a', {'b' * 40!r}, 'y']")


def config(**changes) -> dict:
    return {**BASE, **changes}


@pytest.mark.parametrize("key, low, high", [
    ("num_words", 2, 10_000_000), ("num_chars", 2, 1_000_000), ("max_pos_len", 1, 4096), ("char_dim", 1, 4096),
    ("word_dim", 1, 4096), ("visual_dim", 1, 65536), ("attn_layer", 0, 64), ("conv_layers", 0, 64),
])
def test_config_integers_at_and_past_their_bounds(key, low, high):
    for value in (low, high):
        assert getattr(check_config(config(**{key: value})), key) == value
    for value in (low - 1, high + 1, float(low), True if low <= 1 <= high else None, str(low)):
        refused(lambda: check_config(config(**{key: value})),
                f"config {key} must be an integer in [{low}, {high}], got {str(value)[:40]}")


def test_dim_heads_and_conv_kernel_bounds():
    assert check_config(config(dim=8192, num_heads=8192)).head_size == 1
    assert check_config(config(dim=1, num_heads=1)).dim == 1
    refused(lambda: check_config(config(dim=8193, num_heads=1)), "config dim must be an integer in [1, 8192], got 8193")
    refused(lambda: check_config(config(dim=8, num_heads=0)), "config num_heads must be an integer in [1, 8192], got 0")
    refused(lambda: check_config(config(dim=6, num_heads=4)),
            "config is invalid (dim 6 is not a multiple of num_heads 4)")
    assert [check_config(config(conv_kernel=k)).conv_kernel for k in (1, 3, 63)] == [1, 3, 63]
    for k in (2, 62):
        refused(lambda: check_config(config(conv_kernel=k)), "config conv_kernel must be odd")
    refused(lambda: check_config(config(conv_kernel=65)), "config conv_kernel must be an integer in [1, 63], got 65")
    refused(lambda: check_config(config(num_words=10**50)),
            f"config num_words must be an integer in [2, 10000000], got {str(10**50)[:40]}")


def test_a_config_may_leave_fields_to_their_defaults():
    got = check_config({"num_words": 5, "num_chars": 3})
    assert got == SeqPANConfig(num_words=5, num_chars=3)
    assert got.conv_kernel == 7 and got.char_kernels == (1, 2, 3, 4)


@pytest.mark.parametrize("key, good, bad", [
    ("tau", [1e-300, 0.3, 5, 1e300], [0, 0.0, -0.1, float("inf"), float("nan"), True, "0.3", None]),
    ("drop_rate", [0, 0.0, 0.5, 0.999], [1, 1.0, -0.01, float("nan"), False, "0"]),
    ("match_lambda", [-3.5, 0, 0.0, 2, 1e300], [float("inf"), float("-inf"), float("nan"), True, [1]]),
])
def test_config_floats(key, good, bad):
    for value in good:
        assert getattr(check_config(config(**{key: value})), key) == value
    for value in bad:
        refused(lambda: check_config(config(**{key: value})), f"config {key} is out of range: {str(value)[:40]}")


@pytest.mark.parametrize("key, high", [("char_kernels", 4), ("char_filters", 4096)])
def test_config_char_lists(key, high):
    other = "char_filters" if key == "char_kernels" else "char_kernels"
    for items in ([1], [high], [1] * 8, [high, 1, high]):
        got = check_config(config(**{key: items, other: [1] * len(items)}))
        assert getattr(got, key) == tuple(items)
    for items in ([], [1] * 9, [0], [high + 1], [1, -1], [1.0], [True], "1234", 4, None):
        refused(lambda: check_config(config(**{key: items})),
                f"config {key} must be 1 to 8 integers in [1, {high}]")
    refused(lambda: check_config(config(**{key: [1, 1], other: [1]})),
            "config is invalid (char_kernels and char_filters differ in length)")


def test_config_shape_and_keys():
    for raw in ([], "x", None, 3):
        refused(lambda: check_config(raw), "config is not a JSON object")
    refused(lambda: check_config(config(b=1, a=2, c=3, d=4)), "config has unknown keys ['a', 'b', 'c']")
    refused(lambda: check_config({"num_words": 5}), "config is invalid (SeqPANConfig.__init__() missing 1 "
                                                   "required positional argument: 'num_chars')")


def test_vocab_ids_lie_in_the_embedding():
    vocab = {"<PAD>": 0, "a": 1, "b": 4}
    assert check_vocab(vocab, 5, "word_dict") is vocab
    assert check_vocab({}, 5, "word_dict") == {}
    for index in (5, -1, 1.0, True, "1", None, 10**50):
        refused(lambda: check_vocab({"a": 1, "bad": index}, 5, "word_dict"),
                f"word_dict['bad'] = {str(index)[:40]} is not an id in [0, 5)")
    refused(lambda: check_vocab({"k" * 50: 9}, 5, "char_dict"), f"char_dict[{'k' * 40!r}] = 9 is not an id in [0, 5)")
    for vocab in ([], "x", None):
        refused(lambda: check_vocab(vocab, 5, "char_dict"), "char_dict is not a JSON object")


def tensor_header(**changes) -> dict:
    header = {k: {"dtype": "F32", "shape": list(v.shape), "data_offsets": [0, 0]}
              for k, v in MODEL.state_dict().items()}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


def test_check_tensors_names_dtypes_and_shapes():
    check_tensors(tensor_header(), CFG)
    name = "predictor.start_dense.bias"
    shape = tuple(MODEL.state_dict()[name].shape)
    for dtype in ("F16", "BF16", "F64"):
        check_tensors(tensor_header(**{name: {"dtype": dtype, "shape": list(shape)}}), CFG)
    for dtype in ("I32", "f32", None, 5):
        refused(lambda: check_tensors(tensor_header(**{name: {"dtype": dtype, "shape": list(shape)}}), CFG),
                f"{name} has dtype {dtype}, expected one of F32, F16, BF16, F64")
    refused(lambda: check_tensors(tensor_header(**{name: [1]}), CFG),
            f"{name} has dtype None, expected one of F32, F16, BF16, F64")
    for bad in ([*shape, 1], [2 * shape[0]], tuple(shape), None):
        refused(lambda: check_tensors(tensor_header(**{name: {"dtype": "F32", "shape": bad}}), CFG),
                f"{name} has shape {bad}, expected {shape}")
    refused(lambda: check_tensors(tensor_header(**{name: None}), CFG),
            f"does not fit the model: missing [{name!r}], unexpected []")
    refused(lambda: check_tensors(tensor_header(z={}, y={}, x={}, w={}), CFG),
            "does not fit the model: missing [], unexpected ['w', 'x', 'y']")


def test_weights_hash_covers_config_names_and_values():
    again = random_model(CFG, seed=2, dtype=torch.float32)
    assert weights_hash(again) == weights_hash(MODEL) and len(weights_hash(MODEL)) == 64
    nudged = random_model(CFG, seed=2, dtype=torch.float32)
    with torch.no_grad():
        bias = nudged.predictor.start_dense.bias
        bias[0] = torch.nextafter(bias[0], torch.tensor(float("inf")))
    other_config = random_model(dataclasses.replace(CFG, tau=0.5), seed=2, dtype=torch.float32)
    assert torch.equal(other_config.predictor.start_dense.bias, MODEL.predictor.start_dense.bias)
    assert len({weights_hash(MODEL), weights_hash(nudged), weights_hash(other_config)}) == 3
    as_bf16 = random_model(CFG, seed=2, dtype=torch.bfloat16)  # hashed as float32 values
    rounded = random_model(CFG, seed=2, dtype=torch.float32)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in MODEL.state_dict().items()})
    assert weights_hash(as_bf16) == weights_hash(rounded)


def test_weights_of_other_float_types_and_infinite_ones(tmp_path):
    saved = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    half = rewrite(saved, tmp_path / "half.safetensors", tensor_change=lambda t: {k: v.half() for k, v in t.items()})
    loaded = load_checkpoint(half).model.predictor.start_dense.bias
    assert loaded.dtype == torch.float32 and torch.equal(loaded, MODEL.predictor.start_dense.bias.half().float())

    def infinite(tensors):
        tensors["q2v.w_mul"] = tensors["q2v.w_mul"].clone()
        tensors["q2v.w_mul"].view(-1)[-1] = float("-inf")
        return tensors

    path = rewrite(saved, tmp_path / "inf.safetensors", tensor_change=infinite)
    refused(lambda: load_checkpoint(path), f"checkpoint {path}: weight q2v.w_mul holds NaN or inf values")


def test_tensor_data_that_does_not_match_its_header_is_corrupt(tmp_path):
    tensors = {k: v.detach().clone() for k, v in MODEL.state_dict().items()}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "seqpan-checkpoint-v1", "config": CFG.to_json(),
                                            "word_dict": json.dumps(WORD_DICT), "char_dict": json.dumps(CHAR_DICT)})
    body = path.read_bytes()
    path.write_bytes(body[:-4])  # the last tensor's data cut short
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"checkpoint {path}: corrupt tensor data (")


def test_weights_are_saved_as_float32_whatever_the_models_dtype(tmp_path):
    bf16 = random_model(CFG, seed=2, dtype=torch.bfloat16)
    path = save_checkpoint(tmp_path / "m.safetensors", bf16, WORD_DICT, CHAR_DICT)
    header, _ = read_header(path.read_bytes())
    assert {info["dtype"] for name, info in header.items() if name != "__metadata__"} == {"F32"}
    loaded = load_checkpoint(path).model.predictor.start_dense.bias
    assert loaded.dtype == torch.float32 and torch.equal(loaded, bf16.predictor.start_dense.bias.float())


def test_a_safetensors_file_without_metadata_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    refused(lambda: load_checkpoint(path), f"checkpoint {path}: not a seqpan checkpoint (no metadata)")


def test_long_values_are_cut_in_messages():
    refused(lambda: check_config(config(tau="t" * 50)), f"config tau is out of range: {'t' * 40}")
    name = "predictor.start_dense.bias"
    refused(lambda: check_tensors(tensor_header(**{name: {"dtype": "D" * 30, "shape": [1]}}), CFG),
            f"{name} has dtype {'D' * 20}, expected one of F32, F16, BF16, F64")
    shape = [1] * 40  # "[1, 1, ..." is 118 characters
    refused(lambda: check_tensors(tensor_header(**{name: {"dtype": "F32", "shape": shape}}), CFG),
            f"{name} has shape {'[' + '1, ' * 19 + '1,'}, expected {tuple(MODEL.state_dict()[name].shape)}")
    gone = sorted(MODEL.state_dict())[:4]
    refused(lambda: check_tensors(tensor_header(**{k: None for k in gone}, a={}, b={}, c={}, d={}), CFG),
            f"does not fit the model: missing {gone[:3]}, unexpected ['a', 'b', 'c']")


def test_load_names_the_field_at_fault_and_warns_of_a_missing_hash(tmp_path, caplog):
    saved = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    old = rewrite(saved, tmp_path / "old.safetensors")
    with caplog.at_level("WARNING", logger="seqpan"):
        assert load_checkpoint(old).word_dict == WORD_DICT
    assert caplog.messages == [f"seqpan: checkpoint {old} has no content hash (written before seqpan stored one); "
                               "its integrity is not checked"]
    bad = rewrite(saved, tmp_path / "c.safetensors", {"char_dict": {**CHAR_DICT, "z": 30}})
    refused(lambda: load_checkpoint(bad), f"checkpoint {bad}: char_dict['z'] = 30 is not an id in [0, 30)")
    bad = rewrite(saved, tmp_path / "w.safetensors", {"word_dict": {**WORD_DICT, "z": 40}})
    refused(lambda: load_checkpoint(bad), f"checkpoint {bad}: word_dict['z'] = 40 is not an id in [0, 40)")
    bad = rewrite(saved, tmp_path / "e.safetensors", {"extra": [1]})
    refused(lambda: load_checkpoint(bad), f"checkpoint {bad}: metadata 'extra' is not a JSON object")
