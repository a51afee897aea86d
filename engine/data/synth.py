"""A grounding dataset with real queries and moments and synthesized clip features.

Queries, moments and durations are Charades-STA test's (shipped in `engine/data/annotations/`); real I3D
features are not available, so each video gets 1024-d clip features built to carry the
meaning of its queries where their moments are:

* every word of the vocabulary gets a fixed random 300-d vector, written out as a GloVe-format
  file that training reads as its word vectors; a query's meaning is the unit-normalized sum
  of its words' vectors weighted by inverse document frequency (as a clip shows the objects
  and actions of a sentence, not its articles);
* a clip inside one or more of its video's moments carries the normalized sum of those
  queries' meanings; every other clip belongs to a distractor segment (3 to 10 clips) that
  carries the meaning of a random query of another video, so segments that look like moments
  are everywhere and only the query's words tell the right one;
* clip content is mapped to 1024-d by a fixed random orthonormal map, plus Gaussian noise.

So a model must match query words to clip content; position alone does no better than the
Charades-STA moment prior, which `position_baselines` measures.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import RANDOM_WORD_STD, Record, read_charades, read_durations
from .features import index_to_time, time_to_index
from .metrics import score_moments
from .shipped import CHARADES_DURATIONS, CHARADES_TEST

SPLITS = ("train", "val", "test")
WORD_DIM = 300
VISUAL_DIM = 1024
FEATURE_SCALE = 16.0  # clip features end up with a per-dimension std of about 0.5
DISTRACTOR_CLIPS = (3, 10)  # length range of a distractor segment


@dataclass(frozen=True)
class SynthDataset:
    """Where a synthetic dataset lies, in the original's Charades-STA layout."""
    root: Path
    features: Path  # <vid>.npy per video, [clips, 1024] float32
    durations: Path  # {vid: seconds}
    glove: Path  # GloVe-format word vectors
    splits: dict[str, Path]  # train/val/test annotation files, `vid start end##sentence` lines


def split_videos(vids: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Deterministic split of the videos (not the queries) into train/val/test by `fractions`."""
    order = [vids[i] for i in np.random.default_rng(seed).permutation(len(vids))]
    cut_1 = round(len(order) * fractions[0])
    cut_2 = cut_1 + round(len(order) * fractions[1])
    return dict(zip(SPLITS, (order[:cut_1], order[cut_1:cut_2], order[cut_2:])))


def query_meanings(records: Sequence[Record], vectors: dict[str, np.ndarray]) -> np.ndarray:
    """[len(records), 300]: each query's word vectors weighted by their inverse document
    frequency over the queries (so "a", "person", "." say little), summed, unit-normalized."""
    document_frequency = Counter(w for r in records for w in set(r.words))
    idf = {w: np.log(len(records) / n) for w, n in document_frequency.items()}
    sums = np.stack([np.sum([idf[w] * vectors[w] for w in r.words], axis=0) for r in records])
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def clip_content(duration: float, num_clips: int, moments: Sequence[tuple[float, float, np.ndarray]],
                 distractors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[num_clips, 300] unit content vectors: the moments' meanings where they are, distractor
    segments (each one row of `distractors`, picked at random) everywhere else."""
    centers = (np.arange(num_clips) + 0.5) * duration / num_clips
    content = np.zeros((num_clips, WORD_DIM))
    for start, end, meaning in moments:
        content[(centers >= start) & (centers <= end)] += meaning
    free = np.flatnonzero(~content.any(axis=1))
    i = 0
    while i < len(free):
        run = rng.integers(DISTRACTOR_CLIPS[0], DISTRACTOR_CLIPS[1] + 1)
        stop = i + 1
        while stop < len(free) and stop - i < run and free[stop] == free[stop - 1] + 1:
            stop += 1
        content[free[i:stop]] = distractors[rng.integers(len(distractors))]
        i = stop
    return content / np.linalg.norm(content, axis=1, keepdims=True)


def random_orthonormal_map(rng: np.random.Generator) -> np.ndarray:
    """[1024, 300] float32 with orthonormal, dense columns: 300 random columns of the 1024-point
    Hadamard matrix with random row signs, scaled to unit norm (no QR: cheap on any CPU)."""
    hadamard = np.ones((1, 1), dtype=np.float32)
    while hadamard.shape[0] < VISUAL_DIM:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(VISUAL_DIM, 1))
    return signs * hadamard[:, rng.choice(VISUAL_DIM, WORD_DIM, replace=False)] / np.sqrt(np.float32(VISUAL_DIM))


def build_synthetic_charades(out: str | Path, seed: int = 0, clip_seconds: float = 1.0, noise: float = 0.5,
                             fractions: Sequence[float] = (0.7, 0.1, 0.2),
                             annotations: Path = CHARADES_TEST, durations: Path = CHARADES_DURATIONS
                             ) -> SynthDataset:
    """Write the dataset under `out`: features, durations, GloVe file and split files.

    `noise` is the noise's norm within the 300-d word subspace relative to the signal's.
    """
    out = Path(out)
    durations_by_vid = read_durations(durations)
    lines = [line.strip() for line in annotations.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = read_charades(annotations, durations_by_vid)
    rng = np.random.default_rng(seed)
    vocab = sorted({w for r in records for w in r.words})
    vectors = dict(zip(vocab, (rng.standard_normal((len(vocab), WORD_DIM)) * RANDOM_WORD_STD).astype(np.float32)))
    meanings = query_meanings(records, vectors)
    projection = random_orthonormal_map(rng)
    by_vid: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_vid[r.vid].append(i)
    vids = sorted(by_vid)
    record_vids = np.array([r.vid for r in records])

    contents, sizes = [], []
    for vid in vids:
        duration, own = durations_by_vid[vid], by_vid[vid]
        num_clips = max(1, round(duration / clip_seconds))
        others = np.flatnonzero(record_vids != vid)
        distractors = meanings[rng.choice(others, size=min(32, len(others)), replace=False)]
        moments = [(records[i].start, records[i].end, meanings[i]) for i in own]
        contents.append(clip_content(duration, num_clips, moments, distractors, rng))
        sizes.append(num_clips)
    # one projection for all clips: a single large product (many small ones crawl on a busy CPU)
    feats = np.concatenate(contents).astype(np.float32) @ projection.T
    feats += rng.standard_normal(feats.shape, dtype=np.float32) * np.float32(noise / np.sqrt(WORD_DIM))
    feats *= FEATURE_SCALE
    (out / "features").mkdir(parents=True, exist_ok=True)
    for vid, clips in zip(vids, np.split(feats, np.cumsum(sizes)[:-1])):
        np.save(out / "features" / f"{vid}.npy", clips)

    splits = {}
    for name, split_vids in split_videos(vids, fractions, seed).items():
        keep = set(split_vids)
        splits[name] = out / f"{name}.txt"
        splits[name].write_text("".join(f"{line}\n" for line in lines if line.split()[0] in keep), encoding="utf-8")
    (out / "durations.json").write_text(json.dumps(durations_by_vid, indent=0), encoding="utf-8")
    with open(out / "glove.txt", "w", encoding="utf-8") as handle:
        handle.writelines(word + " " + " ".join(f"{x:.6f}" for x in vectors[word]) + "\n" for word in vocab)
    return SynthDataset(out, out / "features", out / "durations.json", out / "glove.txt", splits)


def position_baselines(train: Sequence[Record], test: Sequence[Record], num_clips: int) -> dict[str, dict[str, float]]:
    """Metrics on `test` of two predictors that see only positions, fit on `train`:
    `mean_span` predicts the mean normalized (start, end); `frequent_span` the most frequent
    (start, end) index pair over `num_clips` uniform clips."""
    spans = np.array([(r.start / r.duration, r.end / r.duration) for r in train])
    mean_start, mean_end = spans.mean(axis=0)
    pairs = Counter(time_to_index(r.start, r.end, num_clips, r.duration) for r in train)
    s_ind, e_ind = pairs.most_common(1)[0][0]
    truth = [(r.start, r.end) for r in test]
    mean_span = [(mean_start * r.duration, mean_end * r.duration) for r in test]
    frequent = [index_to_time(s_ind, e_ind, num_clips, r.duration) for r in test]
    return {"mean_span": score_moments(mean_span, truth), "frequent_span": score_moments(frequent, truth)}
