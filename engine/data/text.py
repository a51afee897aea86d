"""Query text handling of the original SeqPAN data pipeline, with no nltk at run time.

The original tokenizes a query as ``nltk.word_tokenize(sentence.strip().lower(),
language="english")``: Punkt splits the text into sentences with its English model, then
nltk's improved Treebank tokenizer splits each sentence into words. :func:`tokenize`
reproduces nltk 3.10's output with the standard library alone. Vocabularies, id encoding and
padding follow the original's ``vocab_emb_gen``, ``dataset_gen`` and batch padding.

Exactness: the tokenizer is checked against nltk on every query of Charades-STA test and
ActivityNet Captions val_1 (``tests/test_text.py``). nltk matches with the third-party
``regex`` engine and this module with ``re``; the characters the two class differently as
word characters (superscript digits, fractions, combining marks, ...) are swapped for
stand-ins that ``re`` classes as ``regex`` does. Left out: the control characters
U+001C..U+001F (whitespace to ``re``, not to ``regex``) and characters newer than Python's
Unicode database. Older nltk (3.5 to 3.9) differs from 3.10 on words that start with an
apostrophe ("'the") and on figure/en/em dashes.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from reference.embedding import MIN_CHAR_WIDTH  # the char CNN's widest kernel is 4 wide and VALID

PAD, UNK = "<PAD>", "<UNK>"
PAD_ID, UNK_ID = 0, 1

# ---------------------------------------------------------------------------------------------
# Sentence splitting: Punkt with nltk's English model, specialised to lower-cased text.
#
# A candidate break is a '.', '?' or '!' followed by punctuation or by whitespace and a token;
# Punkt decides it from the word before and the token after. On lower-cased text the English
# model's decisions reduce to these, which need only its abbreviations and four of its words:
#  * '.', '?' and '!' standing alone, and words ending in a single '.', end a sentence, but
#  * an ellipsis, or a word whose stem (or last hyphen part) is a known abbreviation, never
#    does (the model overrides that only before capitalised words);
#  * an initial ("b.") or a number ("4.") does only when the next token is none of ;:,.!? and
#    starts with no cased letter, or is one of four words the model saw begin a sentence in
#    lower case and never capitalised; an initial also stays joined to a token starting with
#    an upper-case letter that has no lower-case form. (The model's collocations only ever
#    join pairs that this rule joins already.)
# ---------------------------------------------------------------------------------------------

# abbrev_types of nltk's punkt_tab/english model.
_ABBREVIATIONS = frozenset(
    """
    a.a a.c a.d a.g a.h a.m a.m.e a.s a.t adm ala ariz aug ave b.f b.v bros c c.i.t c.o.m.b c.v
    calif chg cie co col colo conn corp cos ct d d.c d.h d.w dec dr e e.f e.h e.l e.m f f.g f.j
    feb fla fri ft g g.d g.f g.k ga gen h h.c h.f h.m i.m.s ill inc j.b j.c j.j j.k j.p j.r jan
    jr k kan ky l l.a l.f l.p lt ltd m m.b.a m.d.c m.j maj messrs mg mich minn mr mrs ms n n.c
    n.d n.h n.j n.m n.v n.y nev nov oct ok okla ore p p.a.m p.m pa ph.d prof r r.a r.h r.i r.j
    r.k r.t rep reps s s.a s.a.y s.c s.g s.p.a s.s sen sep sept sr st sw t t.j tenn tues u.k u.n
    u.s u.s.a u.s.s.r v va vs vt w w.c w.r w.va w.w wash wed wis yr
    """.split()
) | {". . "}  # the stem of a spaced ellipsis ". . ."

# Word types with the model's "begins a sentence in lower case" flag and no upper-case flag.
_LOWER_CASE_STARTERS = frozenset({"administrators", "b-week", "r-revised", "z-holiday"})

_NON_WORD = r"""[)";}\]*:@'({\[\u2018\u2019\u201c\u201d\xab\xbb?!]"""
_MULTI_CHAR = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"""[^("`{\[:;&#*@)}\]\-,]"""
_PUNKT_WORD_RE = re.compile(
    rf"{_MULTI_CHAR}"
    rf"|(?={_WORD_START})\S+?"
    rf"(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))"
    r"|\S"
)
_END_CANDIDATE_RE = re.compile(rf"[.?!](?=(?P<after>{_NON_WORD}|\s+(?P<next>\S+)))")
_REALIGN_RE = re.compile(r"""["')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)""", re.M)
_NUMBER_RE = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$")
_INITIAL_RE = re.compile(r"[^\W\d]\.$")
_ELLIPSIS_RE = re.compile(r"\.\.+$")
_NOT_SENTENCE_START = frozenset(";:,.!?")
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def _word_type(token: str, drop_period: bool) -> str:
    """Punkt's case-folded type of a token: numbers become '##number##'; maybe drop a final '.'."""
    typ = _NUMBER_RE.sub("##number##", token.lower())
    return typ[:-1] if drop_period and len(typ) > 1 and typ.endswith(".") else typ


def _ends_sentence(token: str) -> bool:
    """Punkt's first pass: does this token, by its own type, end a sentence?"""
    if token in ("?", "!", "."):
        return True
    if _ELLIPSIS_RE.match(token) or not token.endswith(".") or token.endswith(".."):
        return False
    stem = token[:-1].lower()
    return stem not in _ABBREVIATIONS and stem.split("-")[-1] not in _ABBREVIATIONS


def _joins_next(token: str, following: str, following_ends: bool) -> bool:
    """Punkt's second pass for a sentence-ending token: does it join ``following`` after all?"""
    is_initial = _INITIAL_RE.match(token) is not None
    if not (is_initial or _word_type(token, drop_period=True) == "##number##"):
        return False
    if following in _NOT_SENTENCE_START:
        return True
    if following[0].islower():
        return _word_type(following, drop_period=following_ends) not in _LOWER_CASE_STARTERS
    return is_initial and following[0].isupper()


def _context_has_break(context: str) -> bool:
    """True when Punkt breaks after any token of ``context`` other than its last."""
    tokens = [tok for line in context.split("\n") for tok in _PUNKT_WORD_RE.findall(line)]
    ends = [_ends_sentence(tok) for tok in tokens]
    for i in range(len(tokens) - 1):
        if ends[i] and _joins_next(tokens[i], tokens[i + 1], ends[i + 1]):
            ends[i] = False
    return any(ends[:-1])


def _break_candidates(text: str) -> Iterable[tuple[re.Match[str], str]]:
    """Each candidate end with its context (the word before, the mark, what follows).

    A candidate whose preceding word overlaps the next candidate's is dropped, and a word
    whose only whitespace is its first character counts as having none, as in nltk.
    """
    previous: re.Match[str] | None = None
    word_start = word_stop = 0
    for match in _END_CANDIDATE_RE.finditer(text):
        before = text[word_stop : match.start()]
        last_space = max(before.rfind(c) for c in _ASCII_WHITESPACE)
        start = word_stop + last_space + 1 if last_space > 0 else word_start
        if previous is not None and word_stop <= start:
            yield previous, text[word_start:word_stop] + previous.group() + previous.group("after")
        previous, word_start, word_stop = match, start, match.start()
    if previous is not None:
        yield previous, text[word_start:word_stop] + previous.group() + previous.group("after")


def _split_sentences(text: str) -> list[str]:
    """Punkt English sentence split of lower-cased ``text`` (nltk ``sent_tokenize``)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match, context in _break_candidates(text):
        if _context_has_break(context):
            spans.append((start, match.end()))
            start = match.start("next") if match.group("next") else match.end()
    spans.append((start, len(text.rstrip())))

    # Closing quotes and brackets right after a break belong to the sentence before it.
    sentences: list[str] = []
    shift = 0
    for i, (begin, end) in enumerate(spans):
        begin += shift
        if i + 1 < len(spans):
            next_begin, next_end = spans[i + 1]
            closing = _REALIGN_RE.match(text[next_begin:next_end])
            if closing:
                sentences.append(text[begin : next_begin + len(closing.group().rstrip())])
                shift = closing.end()
                continue
            shift = 0
        if text[begin:end]:
            sentences.append(text[begin:end])
    return sentences


# ---------------------------------------------------------------------------------------------
# Word splitting: nltk's NLTKWordTokenizer (improved Treebank rules), applied per sentence.
# ---------------------------------------------------------------------------------------------


def _rules(*pairs: tuple[str, str]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern), replacement) for pattern, replacement in pairs]


_OPENING_QUOTES = _rules(
    (r"([«“‘„]|`+)", r" \1 "),
    (r'^"', "``"),
    (r"(``)", r" \1 "),
    (r"""([ (\[{<])("|'')""", r"\1 `` "),
    # an apostrophe opening a word, unless it starts a clitic ('re, 've, 'll, 'm, 't, 's, 'd, 'n)
    (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),
)
_PUNCTUATION = _rules(
    (r"""([^.])(\.)([\])}>"'»”’ ]*+)\s*$""", r"\1 \2 \3 "),  # the sentence-final period
    (r"([:,])([^\d])", r" \1 \2"),
    (r"([:,])$", r" \1 "),
    (r"\.{2,}", r" \g<0> "),
    (r"[;@#$%&]", r" \g<0> "),
    (r"[\u2012-\u2015]", r" \g<0> "),  # figure dash, en dash, em dash, horizontal bar
    (r"""([^.])(\.)([\])}>"']*)\s*$""", r"\1 \2\3 "),
    (r"[?!]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "),
    (r"[*]", r" \g<0> "),
    (r"[\][(){}<>]", r" \g<0> "),
    (r"--", r" -- "),
)
_CLOSING_QUOTES = _rules(
    (r"([»”’])", r" \1 "),
    (r"''", " '' "),
    (r'"', " '' "),
    (r"\s+", " "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
)
_CONTRACTIONS = _rules(
    *[
        (rf"(?i)\b({head})({tail}){end}", r" \1 \2 ")
        for head, tail, end in (
            ("can", "not", r"\b"),
            ("d", "'ye", r"\b"),
            ("gim", "me", r"\b"),
            ("gon", "na", r"\b"),
            ("got", "ta", r"\b"),
            ("lem", "me", r"\b"),
            ("more", "'n", r"\b"),
            ("wan", "na", r"(?=\s)"),
        )
    ],
    (r"(?i) ('t)(is)\b", r" \1 \2 "),
    (r"(?i) ('t)(was)\b", r" \1 \2 "),
)


def _split_words(sentence: str, restore: dict[int, str]) -> list[str]:
    """nltk's ``NLTKWordTokenizer().tokenize`` of one sentence holding stand-ins (``restore``)."""
    text = sentence
    for pattern, replacement in _OPENING_QUOTES + _PUNCTUATION:
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _CLOSING_QUOTES:
        text = pattern.sub(replacement, text)
    text = text.translate(restore)  # nltk runs the contraction rules with `re`, on the real chars
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return text.split()


# Letters the `regex` package counts as word characters besides letters, marks and Nd/Nl/Pc.
_CIRCLED_LETTERS = ((0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189))
# Unused-by-the-rules characters to stand in for swapped ones: private use, CJK, math letters.
_STAND_IN_RANGES = ((0xE000, 0xF900), (0x4E00, 0xA000), (0x1D400, 0x1D800))


def _is_re_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _is_regex_word(char: str) -> bool:
    """Whether the `regex` package, which nltk matches with, counts ``char`` as ``\\w``."""
    category = unicodedata.category(char)
    if category == "No":
        return False
    if category[0] == "M" or category == "Pc" or char in "\u200c\u200d":
        return True
    return _is_re_word(char) or any(lo <= ord(char) <= hi for lo, hi in _CIRCLED_LETTERS)


def _stand_ins(text: str) -> dict[str, str]:
    """Stand-ins for the chars of ``text`` that `re` and `regex` class differently as ``\\w``.

    A stand-in has the `regex` class of the char it replaces, its case predicates, no digit
    value, and appears nowhere in ``text``; no tokenizer rule names either of them.
    """
    swaps: dict[str, str] = {}
    taken = set(text)
    for char in sorted(taken):
        if char.isascii() or _is_regex_word(char) == _is_re_word(char):
            continue
        wanted = (_is_regex_word(char), char.islower(), char.isupper())
        candidates = (chr(i) for lo, hi in _STAND_IN_RANGES for i in range(lo, hi))
        swaps[char] = next(
            c
            for c in candidates
            if c not in taken
            and not c.isdecimal()
            and (_is_re_word(c), c.islower(), c.isupper()) == wanted
        )
        taken.add(swaps[char])
    return swaps


def tokenize(sentence: str) -> list[str]:
    """Words of a query exactly as ``word_tokenize(sentence.strip().lower(), "english")``."""
    text = sentence.strip().lower()
    swaps = _stand_ins(text)
    restore = str.maketrans({stand_in: char for char, stand_in in swaps.items()})
    sentences = _split_sentences(text.translate(str.maketrans(swaps)) if swaps else text)
    return [word for part in sentences for word in _split_words(part, restore)]


# ---------------------------------------------------------------------------------------------
# Vocabularies, ids and padding.
# ---------------------------------------------------------------------------------------------


def build_vocab(
    token_lists: Iterable[Sequence[str]],
    embedding_words: set[str] | None = None,
    min_char_count: int = 5,
) -> tuple[dict[str, int], dict[str, int]]:
    """Word and char vocabularies as the original's ``vocab_emb_gen`` builds them.

    Words and their characters are counted over ``token_lists`` in order (the original
    passes train, [val,] test). Words: ``<PAD>``, ``<UNK>``, then every word in
    ``Counter.most_common()`` order (ties in first-seen order), kept only if it is in
    ``embedding_words`` when that is given (the GloVe vocabulary). Chars: ``<PAD>``,
    ``<UNK>``, then chars seen at least ``min_char_count`` times, most common first.
    """
    word_counts: Counter[str] = Counter()
    char_counts: Counter[str] = Counter()
    for tokens in token_lists:
        for word in tokens:
            word_counts[word] += 1
            char_counts.update(word)
    words = [
        w for w, _ in word_counts.most_common() if embedding_words is None or w in embedding_words
    ]
    chars = [c for c, n in char_counts.most_common() if n >= min_char_count]
    word_dict = {w: i for i, w in enumerate([PAD, UNK, *words])}
    char_dict = {c: i for i, c in enumerate([PAD, UNK, *chars])}
    return word_dict, char_dict


def encode(
    words: Sequence[str], word_dict: dict[str, int], char_dict: dict[str, int], max_words: int
) -> tuple[list[int], list[list[int]]]:
    """Word ids and per-word char ids of the first ``max_words`` words (unknown → 1)."""
    kept = words[:max_words]
    word_ids = [word_dict.get(w, UNK_ID) for w in kept]
    char_ids = [[char_dict.get(c, UNK_ID) for c in w] for w in kept]
    return word_ids, char_ids


def pad_queries(
    word_id_lists: Sequence[Sequence[int]], char_id_lists: Sequence[Sequence[Sequence[int]]]
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded int32 ``[B, M]`` word ids and ``[B, M, W]`` char ids of a batch.

    M is the longest query (0 when every query is empty); W is the longest word, at least 4
    so that the char CNN's width-4 VALID convolution has an output. Chars are left-packed.
    """
    if len(word_id_lists) != len(char_id_lists):
        raise ValueError(
            f"{len(word_id_lists)} word id lists but {len(char_id_lists)} char id lists"
        )
    batch = len(word_id_lists)
    max_len = max((len(ids) for ids in word_id_lists), default=0)
    width = max([MIN_CHAR_WIDTH, *(len(w) for chars in char_id_lists for w in chars)])
    word_ids = np.zeros((batch, max_len), dtype=np.int32)
    char_ids = np.zeros((batch, max_len, width), dtype=np.int32)
    for b, (ids, chars) in enumerate(zip(word_id_lists, char_id_lists)):  # lengths checked above
        if len(ids) != len(chars):
            raise ValueError(f"query {b}: {len(ids)} word ids but {len(chars)} char id lists")
        word_ids[b, : len(ids)] = ids
        for j, word_chars in enumerate(chars):
            char_ids[b, j, : len(word_chars)] = word_chars
    return word_ids, char_ids


def load_glove(
    path: str | Path, word_dim: int = 300, words: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Vectors of a GloVe text file (``word v1 ... v<word_dim>`` per line) as float32.

    Lines are split like the original's ``codecs`` reader (every Unicode line break), stripped
    and split on single spaces; a line without exactly ``word_dim + 1`` fields is skipped, and a
    repeated word keeps its last vector. Values are parsed as float64, then rounded to float32,
    as the original does. With ``words``, only those words are kept, which yields the same
    vocabulary filter for :func:`build_vocab` at a fraction of the memory.
    """
    wanted = None if words is None else set(words)
    vectors: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for chunk in handle:
            for line in chunk.splitlines():
                fields = line.strip().split(" ")
                if len(fields) != word_dim + 1 or (wanted is not None and fields[0] not in wanted):
                    continue
                vectors[fields[0]] = np.array([float(x) for x in fields[1:]]).astype(np.float32)
    return vectors


def embedding_matrix(
    word_dict: dict[str, int], vectors: dict[str, np.ndarray], dim: int
) -> np.ndarray:
    """float32 ``[len(word_dict) - 2, dim]`` rows for ids 2.. (after PAD/UNK); zeros if missing.

    The model prepends its own PAD (zeros) and trainable UNK rows, as the original does.
    """
    table = np.zeros((max(len(word_dict) - 2, 0), dim), dtype=np.float32)
    for word, index in word_dict.items():
        if index >= 2 and word in vectors:
            table[index - 2] = vectors[word]
    return table
