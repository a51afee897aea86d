"""Native checkpoints: one safetensors file with the config and vocabularies in its metadata, and a
content hash over both and every weight. Loading checks everything before it allocates a model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as serialize

from reference.config import SeqPANConfig
from reference.embedding import MIN_CHAR_WIDTH
from reference.errors import SeqPANError
from reference.model import SeqPAN

from .atomic import write_atomically

FORMAT = "seqpan-checkpoint-v1"
HASH_KEY = "content_sha256"  # sha256 of the metadata (this key left out, keys sorted) and the tensor data
METADATA_KEYS = ("format", "config", "word_dict", "char_dict", "extra", HASH_KEY)
HEADER_LIMIT = 100 * 2**20  # the safetensors format's own limit on its JSON header
WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64")
# Accepted ranges of the config's integers: a checkpoint outside them is refused before anything is built.
CONFIG_RANGES: dict[str, tuple[int, int]] = {
    "num_words": (2, 10_000_000), "num_chars": (2, 1_000_000), "max_pos_len": (1, 4096), "char_dim": (1, 4096),
    "word_dim": (1, 4096), "visual_dim": (1, 65536), "dim": (1, 8192), "num_heads": (1, 8192),
    "attn_layer": (0, 64), "conv_kernel": (1, 63), "conv_layers": (0, 64),
}
MAX_CHAR_KERNELS, MAX_CHAR_FILTERS = 8, 4096
log = logging.getLogger("seqpan")


class CheckpointError(SeqPANError, ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


@dataclass
class Checkpoint:
    """A model with the vocabularies that produced its word and char ids."""
    model: SeqPAN
    word_dict: dict[str, int]
    char_dict: dict[str, int]
    extra: dict


def save_checkpoint(path: str | Path, model: SeqPAN, word_dict: dict[str, int], char_dict: dict[str, int],
                    extra: dict | None = None) -> Path:
    """Write model weights (fp32), config, vocabularies and their content hash to one `.safetensors` file."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": model.cfg.to_json(), "word_dict": json.dumps(word_dict),
                "char_dict": json.dumps(char_dict), "extra": json.dumps(extra or {})}
    _, data_start = read_header(serialize(tensors, metadata=metadata))  # the data's place does not move
    body = serialize(tensors, metadata=metadata)
    metadata[HASH_KEY] = content_hash(metadata, memoryview(body)[data_start:])
    body = serialize(tensors, metadata=metadata)
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(body))
    return path


def content_hash(metadata: dict[str, str], data: bytes | memoryview) -> str:
    """SHA-256 of the metadata (without the hash itself, keys sorted) followed by the tensor data."""
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != HASH_KEY}, sort_keys=True).encode())
    h.update(data)
    return h.hexdigest()


def read_header(body: bytes) -> tuple[dict, int]:
    """The safetensors JSON header of a file's bytes and where its tensor data starts."""
    if len(body) < 8:
        raise CheckpointError("corrupt or not a safetensors file (too short)")
    size = int.from_bytes(body[:8], "little")
    if size > min(len(body) - 8, HEADER_LIMIT):
        raise CheckpointError("corrupt or not a safetensors file (bad header length)")
    try:
        header = json.loads(bytes(body[8: 8 + size]).decode("utf-8"))
    except (ValueError, RecursionError):
        raise CheckpointError("corrupt or not a safetensors file (malformed header)") from None
    if not isinstance(header, dict):
        raise CheckpointError("corrupt or not a safetensors file (malformed header)")
    return header, 8 + size


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a native checkpoint; raises CheckpointError with a one-line reason. The header, the
    content hash, the config's ranges, the vocabularies and every tensor's name, dtype and shape are
    checked before a model is allocated; weights must be finite. A checkpoint written before hashes
    existed (no `content_sha256`) loads with a warning."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    body = path.read_bytes()
    try:
        header, data_start = read_header(body)
        meta = check_metadata(header.pop("__metadata__", None))
        if HASH_KEY in meta:
            if meta[HASH_KEY] != content_hash(meta, memoryview(body)[data_start:]):
                raise CheckpointError("its content hash does not match: the file is corrupt or was modified")
        else:
            log.warning("seqpan: checkpoint %s has no content hash (written before seqpan stored one); its "
                        "integrity is not checked", path)
        cfg = check_config(parse_field(meta, "config"))
        word_dict = check_vocab(parse_field(meta, "word_dict"), cfg.num_words, "word_dict")
        char_dict = check_vocab(parse_field(meta, "char_dict"), cfg.num_chars, "char_dict")
        extra = parse_field(meta, "extra", "{}")
        if not isinstance(extra, dict):
            raise CheckpointError("metadata 'extra' is not a JSON object")
        check_tensors(header, cfg)
        try:
            tensors = load_tensors(body)
        except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
            raise CheckpointError(f"corrupt tensor data ({err})") from None
        for name, value in tensors.items():
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"weight {name} holds NaN or inf values")
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    model = SeqPAN(cfg)
    model.load_state_dict(tensors)
    return Checkpoint(model.to(device).eval(), word_dict, char_dict, extra)


def check_metadata(meta: Any) -> dict[str, str]:
    """The header's metadata: text values, in this format."""
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError("not a seqpan checkpoint (no metadata)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"not a seqpan checkpoint (format {str(meta.get('format'))[:40]!r})")
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        raise CheckpointError(f"unknown metadata keys {[k[:40] for k in unknown[:3]]}")
    return meta


def parse_field(meta: dict[str, str], key: str, default: str | None = None) -> Any:
    """One metadata field's JSON value."""
    if key not in meta and default is None:
        raise CheckpointError(f"metadata has no {key!r}")
    try:
        return json.loads(meta.get(key, default))
    except (ValueError, RecursionError):
        raise CheckpointError(f"metadata {key!r} is not valid JSON") from None


def check_config(raw: Any) -> SeqPANConfig:
    """A SeqPANConfig from JSON whose every field has the right type and lies in its range."""
    if not isinstance(raw, dict):
        raise CheckpointError("config is not a JSON object")
    names = {f.name for f in dataclasses.fields(SeqPANConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise CheckpointError(f"config has unknown keys {unknown[:3]}")
    values = dict(raw)
    for key, (low, high) in CONFIG_RANGES.items():
        if key in values and not (type(values[key]) is int and low <= values[key] <= high):
            raise CheckpointError(f"config {key} must be an integer in [{low}, {high}], got {str(values[key])[:40]}")
    if values.get("conv_kernel", 1) % 2 == 0:
        raise CheckpointError("config conv_kernel must be odd")
    for key, ok in (("tau", lambda x: 0 < x), ("drop_rate", lambda x: 0 <= x < 1), ("match_lambda", lambda x: True)):
        if key in values and not (type(values[key]) in (int, float) and math.isfinite(values[key]) and ok(values[key])):
            raise CheckpointError(f"config {key} is out of range: {str(values[key])[:40]}")
    for key, high in (("char_kernels", MIN_CHAR_WIDTH), ("char_filters", MAX_CHAR_FILTERS)):
        if key in values:
            items = values[key]
            if not (isinstance(items, list) and 1 <= len(items) <= MAX_CHAR_KERNELS
                    and all(type(x) is int and 1 <= x <= high for x in items)):
                raise CheckpointError(f"config {key} must be 1 to {MAX_CHAR_KERNELS} integers in [1, {high}]")
            values[key] = tuple(items)
    try:
        return SeqPANConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"config is invalid ({err})") from None


def check_vocab(vocab: Any, size: int, name: str) -> dict[str, int]:
    """A vocabulary: text keys, integer ids in [0, size) (the model's embedding rows)."""
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{name} is not a JSON object")
    for key, index in vocab.items():
        if type(index) is not int or not 0 <= index < size:
            raise CheckpointError(f"{name}[{key[:40]!r}] = {str(index)[:40]} is not an id in [0, {size})")
    return vocab


def check_tensors(header: dict, cfg: SeqPANConfig) -> None:
    """Every tensor the model of `cfg` has, no other, each a float of the model's shape (built on the
    meta device: nothing allocated)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in SeqPAN(cfg).state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, info in header.items():
        dtype, shape = (info.get("dtype"), info.get("shape")) if isinstance(info, dict) else (None, None)
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{name} has dtype {str(dtype)[:20]}, expected one of {', '.join(WEIGHT_DTYPES)}")
        if not isinstance(shape, list) or tuple(shape) != expected[name]:
            raise CheckpointError(f"{name} has shape {str(shape)[:60]}, expected {expected[name]}")


def weights_hash(model: SeqPAN) -> str:
    """A stable SHA-256 over the config and every weight, for caches keyed by weights."""
    h = hashlib.sha256(model.cfg.to_json().encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
