"""Grounding datasets in the original SeqPAN layout: annotations, clip features, encoded samples.

Three annotation formats, read as the original's processors read them (start = max(0, s),
end = min(e, duration), words = tokenize(sentence)):
  charades     lines `vid start end##sentence`, durations from a JSON `{vid: seconds}`
  activitynet  JSON `{vid: {duration, timestamps: [[s, e], ...], sentences: [...]}}`
  tacos        JSON `{vid: {fps, num_frames, timestamps (frames), sentences}}`, `.avi` stripped
Clip features are `<features dir>/<vid>.npy`, down-sampled to max_pos_len clips; a query whose
video has no feature file is skipped and counted, as the original does.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reference.errors import SeqPANError

from .features import FeatureError, load_features, sample_features, time_to_index
from .labels import batch_labels
from .text import build_vocab, embedding_matrix, encode, load_glove, pad_queries, tokenize

FORMATS = ("charades", "activitynet", "tacos")
RANDOM_WORD_STD = 0.3  # word vectors without GloVe: random, at about GloVe's per-dimension scale


class DatasetError(SeqPANError, ValueError):
    """Annotations, durations or features that cannot be read: reported with file and place."""


@dataclass(frozen=True)
class Record:
    """One annotated query: a moment (seconds) of a video and its sentence."""
    vid: str
    start: float
    end: float
    duration: float
    sentence: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    """A record encoded for the model: ids, the video's clip count and the gold clip indices."""
    record: Record
    word_ids: list[int]
    char_ids: list[list[int]]
    num_clips: int
    s_ind: int
    e_ind: int


@dataclass
class Batch:
    """Padded model inputs of some samples (tensors on one device), with training labels."""
    samples: list[Sample]
    video: torch.Tensor  # [B, N, visual_dim]
    video_len: torch.Tensor  # [B]
    word_ids: torch.Tensor  # [B, M]
    char_ids: torch.Tensor  # [B, M, W]
    s_labels: torch.Tensor  # [B, N] soft start labels
    e_labels: torch.Tensor  # [B, N] soft end labels
    match_labels: torch.Tensor  # [B, N] BIEO labels


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text: {err}") from None


def _number(value, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DatasetError(f"{where}: {what} {value!r} is not finite")
    return number


def make_record(vid: str, start: float, end: float, duration: float, sentence: str, where: str) -> Record:
    """A record clipped to the video as the original clips it; `where` names the source in errors."""
    if duration <= 0:
        raise DatasetError(f"{where}: video {vid} has duration {duration}")
    start, end = max(0.0, start), min(end, duration)
    if end < start:
        raise DatasetError(f"{where}: moment ({start}, {end}) of video {vid} ends before it starts")
    words = tuple(tokenize(sentence))
    if not words:
        raise DatasetError(f"{where}: empty sentence")
    return Record(vid, start, end, duration, sentence.strip(), words)


def read_durations(path: str | Path) -> dict[str, float]:
    """`{vid: seconds}` (or the original charades.json's `{vid: {"duration": seconds}}`)."""
    path = Path(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object {{video id: duration}}")
    return {vid: _number(v["duration"] if isinstance(v, dict) and "duration" in v else v, f"{path}: video {vid}",
                         "duration") for vid, v in raw.items()}


def read_charades(path: str | Path, durations: dict[str, float]) -> list[Record]:
    """Charades-STA lines `vid start end##sentence`; blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text: {err}") from None
    records = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        head, sep, sentence = line.partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            raise DatasetError(f"{where}: expected 'vid start end##sentence', got {line[:60]!r}")
        vid = fields[0]
        if vid not in durations:
            raise DatasetError(f"{where}: video {vid} has no duration in the durations file")
        records.append(make_record(vid, _number(fields[1], where, "start"), _number(fields[2], where, "end"),
                                   durations[vid], sentence, where))
    return records


def _read_json_videos(path: Path, keys: tuple[str, ...]):
    """(vid, entry, where) for each video of a `{vid: {...}}` annotation file, keys checked."""
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object {{video id: annotations}}")
    for vid, entry in raw.items():
        where = f"{path}: video {vid}"
        if not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise DatasetError(f"{where}: expected an object with keys {', '.join(keys)}")
        if len(entry["timestamps"]) != len(entry["sentences"]):
            raise DatasetError(f"{where}: {len(entry['timestamps'])} timestamps but "
                               f"{len(entry['sentences'])} sentences")
        yield vid, entry, where


def _video_records(vid: str, entry: dict, where: str, duration: float, scale: float) -> list[Record]:
    """Records of one video's timestamp pairs (divided by `scale`) and sentences."""
    records = []
    for i, (stamp, sentence) in enumerate(zip(entry["timestamps"], entry["sentences"])):
        at = f"{where}, moment {i}"
        if not isinstance(stamp, (list, tuple)) or len(stamp) != 2 or not isinstance(sentence, str):
            raise DatasetError(f"{at}: expected a [start, end] pair and a sentence")
        start, end = _number(stamp[0], at, "start") / scale, _number(stamp[1], at, "end") / scale
        records.append(make_record(vid, start, end, duration, sentence, at))
    return records


def read_activitynet(path: str | Path) -> list[Record]:
    """ActivityNet Captions `{vid: {duration, timestamps (seconds), sentences}}`."""
    return [record for vid, entry, where in _read_json_videos(Path(path), ("duration", "timestamps", "sentences"))
            for record in _video_records(vid, entry, where, _number(entry["duration"], where, "duration"), 1.0)]


def read_tacos(path: str | Path) -> list[Record]:
    """TACoS `{vid: {fps, num_frames, timestamps (frames), sentences}}`; a `.avi` suffix is dropped."""
    records = []
    for vid, entry, where in _read_json_videos(Path(path), ("fps", "num_frames", "timestamps", "sentences")):
        fps = _number(entry["fps"], where, "fps")
        if fps <= 0:
            raise DatasetError(f"{where}: fps {fps} is not positive")
        duration = _number(entry["num_frames"], where, "num_frames") / fps
        records += _video_records(vid.removesuffix(".avi"), entry, where, duration, fps)
    return records


def read_annotations(path: str | Path, fmt: str, durations: str | Path | None = None) -> list[Record]:
    """Records of an annotation file in one of FORMATS (charades needs `durations`)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    if fmt == "charades":
        if durations is None:
            raise DatasetError("the charades format needs a durations JSON {vid: seconds} (--durations)")
        if not Path(durations).is_file():
            raise DatasetError(f"durations file not found: {durations}")
        return read_charades(path, read_durations(durations))
    readers: dict[str, Callable[[Path], list[Record]]] = {"activitynet": read_activitynet, "tacos": read_tacos}
    if fmt not in readers:
        raise DatasetError(f"unknown annotation format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return readers[fmt](path)


def load_video_features(features_dir: str | Path, vids: Sequence[str], max_pos_len: int,
                        visual_dim: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Down-sampled features of every video that has `<vid>.npy`, and the videos that have none."""
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise DatasetError(f"features directory not found: {features_dir}")
    features, missing = {}, []
    for vid in dict.fromkeys(vids):
        path = features_dir / f"{vid}.npy"
        if not path.is_file():
            missing.append(vid)
            continue
        try:
            features[vid] = sample_features(load_features(path, visual_dim), max_pos_len)
        except FeatureError as err:
            raise DatasetError(f"{path}: {err}") from None
    return features, missing


def encode_records(records: Sequence[Record], features: dict[str, np.ndarray], word_dict: dict[str, int],
                   char_dict: dict[str, int], max_pos_len: int) -> list[Sample]:
    """Samples of the records whose video has features (words cut to max_pos_len, as the original)."""
    samples = []
    for record in records:
        if record.vid not in features:
            continue
        num_clips = len(features[record.vid])
        s_ind, e_ind = time_to_index(record.start, record.end, num_clips, record.duration)
        word_ids, char_ids = encode(record.words, word_dict, char_dict, max_pos_len)
        samples.append(Sample(record, word_ids, char_ids, num_clips, int(s_ind), int(e_ind)))
    return samples


@dataclass
class Dataset:
    """Train and validation samples over one vocabulary and one feature table."""
    train: list[Sample]
    val: list[Sample]
    features: dict[str, np.ndarray]
    word_dict: dict[str, int]
    char_dict: dict[str, int]
    word_vectors: np.ndarray  # [num_words - 2, word_dim], rows of ids 2..
    skipped: int  # queries dropped because their video has no feature file


def build_dataset(features_dir: str | Path, train_records: Sequence[Record], val_records: Sequence[Record],
                  max_pos_len: int, visual_dim: int = 1024, glove: str | Path | None = None,
                  word_dim: int = 300, seed: int = 0) -> Dataset:
    """Vocabulary (GloVe words only when `glove` is given, as the original), vectors, samples.

    Words and chars are counted over the train and validation queries (the original also
    counted its test split). Without GloVe every word is kept and gets a random vector drawn
    with `seed`.
    """
    records = [*train_records, *val_records]
    features, missing = load_video_features(features_dir, [r.vid for r in records], max_pos_len, visual_dim)
    token_lists = [r.words for r in records]
    if glove is None:
        word_dict, char_dict = build_vocab(token_lists)
        rng = np.random.default_rng(seed)
        vectors = (rng.standard_normal((len(word_dict) - 2, word_dim)) * RANDOM_WORD_STD).astype(np.float32)
    else:
        if not Path(glove).is_file():
            raise DatasetError(f"GloVe file not found: {glove}")
        glove_vectors = load_glove(glove, word_dim, {w for words in token_lists for w in words})
        word_dict, char_dict = build_vocab(token_lists, set(glove_vectors))
        vectors = embedding_matrix(word_dict, glove_vectors, word_dim)
    train = encode_records(train_records, features, word_dict, char_dict, max_pos_len)
    val = encode_records(val_records, features, word_dict, char_dict, max_pos_len)
    if not train:
        raise DatasetError(f"no training query has a feature file in {features_dir}")
    missing_vids = set(missing)
    skipped = sum(r.vid in missing_vids for r in records)
    return Dataset(train, val, features, word_dict, char_dict, vectors, skipped)


def collate(samples: Sequence[Sample], features: dict[str, np.ndarray], device: str | torch.device = "cpu") -> Batch:
    """Pad a list of samples into model inputs and the original's training labels."""
    lengths = [s.num_clips for s in samples]
    video = np.zeros((len(samples), max(lengths), features[samples[0].record.vid].shape[1]), dtype=np.float32)
    for i, sample in enumerate(samples):
        video[i, :sample.num_clips] = features[sample.record.vid]
    word_ids, char_ids = pad_queries([s.word_ids for s in samples], [s.char_ids for s in samples])
    s_labels, e_labels, m_labels = batch_labels([s.s_ind for s in samples], [s.e_ind for s in samples], lengths)
    tensors = (video, np.asarray(lengths, dtype=np.int64), word_ids.astype(np.int64), char_ids.astype(np.int64),
               s_labels, e_labels, m_labels.astype(np.int64))
    return Batch(list(samples), *(torch.from_numpy(t).to(device) for t in tensors))
