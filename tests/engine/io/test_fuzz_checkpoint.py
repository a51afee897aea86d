"""Property-based fuzzing of checkpoint loading (issue #11): generated metadata and single bit flips.

Invariants: load_checkpoint returns a model that grounds a request (an answer or a one-line error)
or raises CheckpointError in one line, building nothing for real first; a bit flipped anywhere in a
hashed checkpoint is always refused.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine import GroundingEngine, GroundingRequest
from engine.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reference.config import SeqPANConfig
from tests.engine.io.test_checkpoint import rewrite
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT
from tests.helpers import fuzz_settings, scratch_folder

FOLDER = scratch_folder("seqpan-ckpt-fuzz-")
SAVED = save_checkpoint(FOLDER / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
BODY = SAVED.read_bytes()
HEADER_END = 8 + int.from_bytes(BODY[:8], "little")
REQUEST = GroundingRequest(np.ones((6, CFG.visual_dim), np.float32), "person opens the door", 9.0)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(),
                         st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                              max_size=3), max_leaves=8)
config_fields = [f for f in SeqPANConfig.__dataclass_fields__]
near_values = st.one_of(st.integers(-2, 70), st.sampled_from([0.0, 0.5, 1.0, 1e-30, 1e30, [1, 2], [4, 4, 4, 4]]))
word_dicts = st.dictionaries(st.text(max_size=3), json_scalars, max_size=4).map(lambda d: {**WORD_DICT, **d})
char_dicts = st.dictionaries(st.text(max_size=2), st.integers(-3, 40), max_size=3).map(lambda d: {**CHAR_DICT, **d})
mutations = st.one_of(
    st.dictionaries(st.sampled_from([f"config.{f}" for f in config_fields]), near_values | json_values,
                    min_size=1, max_size=3),
    st.fixed_dictionaries({"word_dict": st.one_of(json_values, word_dicts)}),
    st.fixed_dictionaries({"char_dict": st.one_of(json_values, char_dicts)}),
    st.dictionaries(st.sampled_from(["extra", "format", "config", "surprise"]),
                    st.one_of(json_values, st.text(max_size=10)), min_size=1, max_size=2),
)


@fuzz_settings(80)
@given(mutations)
def test_fuzz_checkpoint_metadata_loads_or_fails_in_one_line(change):
    path = rewrite(SAVED, FOLDER / "mutated.safetensors", meta_change=change)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        assert "\n" not in str(err)
        return
    result = GroundingEngine(ckpt.model, ckpt.word_dict, ckpt.char_dict, device="cpu").ground([REQUEST])[0]
    json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert result.error is None or "internal error" not in result.error, result.error


@fuzz_settings(150)
@given(st.one_of(st.integers(0, HEADER_END * 8 - 1), st.integers(0, len(BODY) * 8 - 1)))
def test_fuzz_any_bit_flip_is_refused(bit):
    flipped = bytearray(BODY)
    flipped[bit // 8] ^= 1 << (bit % 8)
    path = FOLDER / "flipped.safetensors"
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_unflipped_checkpoint_loads():
    assert torch.equal(load_checkpoint(SAVED).model.q2v.w_mul, MODEL.q2v.w_mul)

