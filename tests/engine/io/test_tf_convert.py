"""The vocabulary pickle of `seqpan convert-tf --vocab` is read without running any of its code
(issue #11, item 3)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from engine.io.tf_convert import ConvertError, read_vocab

WORDS = {"<PAD>": 0, "<UNK>": 1, "person": 2, "door": 3}
CHARS = {"<PAD>": 0, "<UNK>": 1, "a": 2}


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "word_dict", "elsewhere"])
def test_issue11_3_vocab_pickle_runs_no_code(tmp_path, where):
    """Issue #11 (3): `pickle.load` ran a crafted pickle's command before the error appeared."""
    marker = tmp_path / "pwned"
    evil = RunsACommand(marker)
    data = {"top": evil, "word_dict": {"word_dict": evil, "char_dict": CHARS},
            "elsewhere": {"word_dict": WORDS, "char_dict": CHARS, "train_set": [evil]}}[where]
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(data))
    if where == "elsewhere":
        assert read_vocab(path) == (WORDS, CHARS)
    else:
        with pytest.raises(ConvertError):
            read_vocab(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_original_dataset_pickle_with_numpy_arrays_is_read(tmp_path, protocol):
    """The original's processed dataset holds numpy word vectors and samples beside the vocabularies."""
    dataset = {"train_set": [{"vid": "v1", "s_ind": np.int64(3), "w_ids": [2, 3]}], "word_dict": WORDS,
               "char_dict": CHARS, "word_vector": np.ones((2, 300), np.float32), "n_words": 4, "tags": {"a", "b"}}
    path = tmp_path / "dataset.pkl"
    path.write_bytes(pickle.dumps(dataset, protocol=protocol))
    assert read_vocab(path) == (WORDS, CHARS)


@pytest.mark.parametrize("content, message", [
    (b"hello, a text file\n", "cannot read vocabulary pickle"),
    (pickle.dumps({"word_dict": {"a": "1"}, "char_dict": CHARS}), "must map words to non-negative integer ids"),
    (pickle.dumps({"word_dict": {"a": np.int64(1)}, "char_dict": CHARS}), "must map words"),
    (pickle.dumps({"word_dict": {"a": -1}, "char_dict": CHARS}), "must map words"),
    (pickle.dumps([WORDS, CHARS]), "must be a dict"),
    (pickle.dumps({"word_dict": WORDS, "char_dict": CHARS})[:-5], "cannot read vocabulary pickle"),
])
def test_bad_vocab_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "vocab.pkl"
    path.write_bytes(content)
    with pytest.raises(ConvertError, match=message) as info:
        read_vocab(path)
    assert "\n" not in str(info.value)
