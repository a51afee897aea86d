"""engine.data.text: the nltk-exact tokenizer, vocabularies, ids, padding and GloVe loading."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.data.text import build_vocab, embedding_matrix, encode, load_glove, pad_queries, tokenize
from tests.conftest import FIXTURES, REPO, SHARED

FIXTURE = json.loads((FIXTURES / "tokenized_sentences.json").read_text(encoding="utf-8"))
SHARED_DATA = SHARED / "data"


def test_matches_nltk_on_fixture():
    """nltk 3.10's own tokens (tests/data/make_tokenized_fixture.py) for a few hundred queries."""
    assert len(FIXTURE["sentences"]) >= 200
    mismatches = [(s, want, tokenize(s)) for s, want in FIXTURE["sentences"] if tokenize(s) != want]
    assert mismatches == []


@pytest.mark.parametrize(
    "sentence, words",
    [
        ("", []),
        ("   \n\t ", []),
        # an inner sentence end gets its own '.', the text is stripped and lower-cased
        (
            "  Person opens the door. Then he sits down. ",
            "person opens the door . then he sits down .".split(),
        ),
        ("A man can't stop!", ["a", "man", "ca", "n't", "stop", "!"]),
        ('He said "go" (twice).', ["he", "said", "``", "go", "''", "(", "twice", ")", "."]),
        # a known abbreviation keeps its period and the sentence
        ("Mr. Smith waves.", ["mr.", "smith", "waves", "."]),
        ("Pears etc. are here", ["pears", "etc", ".", "are", "here"]),
        # a number before a lower-case word keeps its period; before one of the model's
        # lower-case sentence starters it ends the sentence
        ("figure 4. then", ["figure", "4.", "then"]),
        ("figure 4. administrators", ["figure", "4", ".", "administrators"]),
        ("gonna wanna gimme", ["gon", "na", "wan", "na", "gim", "me"]),
        ("CAFÉ’S Piñata", ["café", "’", "s", "piñata"]),
        # '½' and '²' are word characters to Python's re, not to the regex engine nltk uses,
        # except in nltk's contraction rules, which do use re
        ("½'90s", ["½", "'", "90s"]),
        ("gimme² gimme", ["gimme²", "gim", "me"]),
        ("well-known 1,000.5 items", ["well-known", "1,000.5", "items"]),
    ],
)
def test_tokenize_by_hand(sentence, words):
    assert tokenize(sentence) == words


def test_tokenize_does_not_import_nltk():
    code = "import sys, engine.data.text as t; t.tokenize('a b. c'); print('nltk' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def _annotation_sentences() -> list[str]:
    lines = (SHARED_DATA / "charades_sta_test.txt").read_text(encoding="utf-8").splitlines()
    sentences = [line.split("##", 1)[1] for line in lines if "##" in line]
    activitynet = json.loads((SHARED_DATA / "activitynet_val_1.json").read_text(encoding="utf-8"))
    for item in activitynet.values():
        sentences.extend(item["sentences"])
    return sentences


def _punkt_tab_present() -> bool:
    """A cheap look for punkt_tab where nltk searches, so that machines without the model skip
    without paying for the seconds-long nltk import."""
    roots = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    roots.append(Path.home() / "nltk_data")
    roots += [Path(sys.prefix, *p.split("/"), "nltk_data") for p in ("", "share", "lib")]
    roots += [Path(f"/usr/{p}/nltk_data") for p in ("share", "local/share", "lib", "local/lib")]
    names = ("punkt_tab", "punkt_tab.zip")
    return any((root / "tokenizers" / name).exists() for root in roots for name in names)


@pytest.mark.slow
def test_matches_nltk_on_every_annotation():
    """Every Charades-STA test and ActivityNet val_1 query against nltk itself, when present."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not here")
    if not _punkt_tab_present():
        pytest.skip("nltk's punkt_tab English model is not installed (nltk.download('punkt_tab'))")
    nltk = pytest.importorskip("nltk")
    if tuple(int(p) for p in nltk.__version__.split(".")[:2]) < (3, 10):
        pytest.skip(f"nltk {nltk.__version__}: engine.data.text follows 3.10's apostrophe/dash rules")
    nltk.data.find("tokenizers/punkt_tab/english/")
    from nltk.tokenize import word_tokenize

    sentences = _annotation_sentences()
    assert len(sentences) == 3720 + 17505
    mismatches = [
        s for s in sentences if tokenize(s) != word_tokenize(s.strip().lower(), language="english")
    ]
    assert mismatches == []


TOKEN_LISTS = [["a", "man", "runs"], ["a", "dog", "runs", "a"], ["the", "man"]]


def test_build_vocab_orders_by_count_then_first_seen():
    words, chars = build_vocab(TOKEN_LISTS)
    # counts a:3, man:2, runs:2, dog:1, the:1; ties keep first-seen order
    assert words == {"<PAD>": 0, "<UNK>": 1, "a": 2, "man": 3, "runs": 4, "dog": 5, "the": 6}
    # per occurrence: a 3+2 = 5, n 2+2 = 4, m/r/u/s 2, the rest 1; only 'a' reaches 5
    assert chars == {"<PAD>": 0, "<UNK>": 1, "a": 2}
    _, chars = build_vocab(TOKEN_LISTS, min_char_count=2)
    assert list(chars) == ["<PAD>", "<UNK>", "a", "n", "m", "r", "u", "s"]


def test_build_vocab_puts_a_more_frequent_later_word_first():
    words, _ = build_vocab([["dog", "a"], ["a", "cat", "a"]])
    assert list(words) == ["<PAD>", "<UNK>", "a", "dog", "cat"]  # a:3 first, then dog and cat in first-seen order


def test_build_vocab_keeps_only_embedded_words():
    words, _ = build_vocab(TOKEN_LISTS, embedding_words={"dog", "man", "zebra"})
    assert words == {"<PAD>": 0, "<UNK>": 1, "man": 2, "dog": 3}


def test_build_vocab_of_nothing():
    assert build_vocab([]) == ({"<PAD>": 0, "<UNK>": 1}, {"<PAD>": 0, "<UNK>": 1})


def test_encode_truncates_and_maps_unknowns_to_1():
    words, chars = build_vocab(TOKEN_LISTS, min_char_count=2)  # chars a2 n3 m4 r5 u6 s7
    word_ids, char_ids = encode(["a", "zebra", "man"], words, chars, max_words=2)
    assert word_ids == [2, 1]
    assert char_ids == [[2], [1, 1, 1, 5, 2]]
    assert encode([], words, chars, max_words=5) == ([], [])


def test_pad_queries_left_packs_and_pads_with_zero():
    word_ids, char_ids = pad_queries([[2, 1], [3]], [[[2], [1, 1, 1, 5, 2]], [[4, 2, 3]]])
    assert word_ids.dtype == np.int32 and char_ids.dtype == np.int32
    np.testing.assert_array_equal(word_ids, [[2, 1], [3, 0]])
    np.testing.assert_array_equal(
        char_ids,
        [[[2, 0, 0, 0, 0], [1, 1, 1, 5, 2]], [[4, 2, 3, 0, 0], [0, 0, 0, 0, 0]]],
    )


def test_pad_queries_char_width_is_at_least_4():
    word_ids, char_ids = pad_queries([[5]], [[[7]]])
    np.testing.assert_array_equal(word_ids, [[5]])
    np.testing.assert_array_equal(char_ids, [[[7, 0, 0, 0]]])


def test_pad_queries_with_empty_queries():
    word_ids, char_ids = pad_queries([[], [2]], [[], [[2, 3]]])
    np.testing.assert_array_equal(word_ids, [[0], [2]])
    np.testing.assert_array_equal(char_ids, [[[0, 0, 0, 0]], [[2, 3, 0, 0]]])
    word_ids, char_ids = pad_queries([[]], [[]])
    assert word_ids.shape == (1, 0) and char_ids.shape == (1, 0, 4)
    word_ids, char_ids = pad_queries([], [])  # no queries at all
    assert word_ids.shape == (0, 0) and char_ids.shape == (0, 0, 4)


def test_pad_queries_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="2 word id lists but 1"):
        pad_queries([[1], [2]], [[[1]]])
    with pytest.raises(ValueError, match="query 0: 2 word ids but 1"):
        pad_queries([[1, 2]], [[[1]]])


def _write_glove(path: Path) -> None:
    path.write_text(
        "2 3\n"  # a word2vec-style header: wrong field count
        "the 0.1 0.2 0.3\n"
        "bad 1 2\n"
        " man 1.5 -2 3e-1 \n"  # stripped before splitting
        "two  spaces 1 2 3\n"  # the empty field makes 6 fields
        "odd\u2028word 4 5 6\n"  # U+2028 breaks the line, as the original's codecs reader does
        "the 9 9 9\r\n",  # a repeated word keeps its last vector
        encoding="utf-8",
    )


def test_load_glove(tmp_path):
    path = tmp_path / "glove.txt"
    _write_glove(path)
    vectors = load_glove(path, word_dim=3)
    assert sorted(vectors) == ["man", "the", "word"]
    assert all(v.dtype == np.float32 and v.shape == (3,) for v in vectors.values())
    np.testing.assert_array_equal(vectors["the"], [9, 9, 9])
    np.testing.assert_array_equal(vectors["man"], np.array([1.5, -2.0, 0.3], dtype=np.float32))
    np.testing.assert_array_equal(vectors["word"], [4, 5, 6])
    assert sorted(load_glove(path, word_dim=3, words=["man", "zebra"])) == ["man"]
    small = load_glove(path, word_dim=2)
    assert list(small) == ["bad"]
    np.testing.assert_array_equal(small["bad"], [1, 2])


def test_load_glove_splits_on_single_spaces_and_reads_300_by_default(tmp_path):
    """As the original: fields are split on single spaces, so a tab or a doubled space makes a line the
    wrong length and it is skipped; GloVe's 300 dimensions are the default."""
    path = tmp_path / "glove.txt"
    path.write_text("ok 1 2\ntabbed\t1 2\ndoubled  1 2\n" + "wide " + " ".join(["0.5"] * 300) + "\n")
    assert list(load_glove(path, word_dim=2)) == ["ok"]
    assert list(load_glove(path)) == ["wide"] and load_glove(path)["wide"].shape == (300,)


def test_embedding_matrix_rows_follow_ids_after_pad_unk(tmp_path):
    path = tmp_path / "glove.txt"
    _write_glove(path)
    vectors = load_glove(path, word_dim=3)
    words = {"<PAD>": 0, "<UNK>": 1, "the": 2, "zebra": 3, "man": 4}
    table = embedding_matrix(words, vectors, dim=3)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(
        table, np.array([[9, 9, 9], [0, 0, 0], [1.5, -2.0, 0.3]], dtype=np.float32)
    )
    assert embedding_matrix({"<PAD>": 0, "<UNK>": 1}, vectors, dim=3).shape == (0, 3)


def test_vocab_from_glove_words(tmp_path):
    path = tmp_path / "glove.txt"
    _write_glove(path)
    vectors = load_glove(path, word_dim=3, words={w for ws in TOKEN_LISTS for w in ws})
    words, _ = build_vocab(TOKEN_LISTS, embedding_words=set(vectors))
    assert words == {"<PAD>": 0, "<UNK>": 1, "man": 2, "the": 3}
