"""Benchmark workloads: real queries and durations, synthesized clip features, a random-weight model.

Each workload takes its queries (and their videos) from an annotation file shipped in
`engine/data/annotations/`, in file order, and gives every video `n_clips` clips of seeded N(0, 1) features.
The model has the dataset's preset hyper-parameters, a vocabulary built from the workload's own
queries, and random weights (timing does not depend on trained values).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from engine.data.dataset import Record, read_activitynet, read_charades, read_durations
from engine.data.shipped import ACTIVITYNET_VAL, CHARADES_DURATIONS, CHARADES_TEST
from engine.data.text import build_vocab, encode, pad_queries
from engine.requests import GroundingRequest
from reference.config import preset
from reference.model import SeqPAN
from reference.testing import random_model as random_seqpan

# workload -> (clips per video, annotation source); TACoS's annotations are not shipped, so the
# TACoS-shaped workload puts the Charades-STA queries on 256-clip videos.
WORKLOADS: dict[str, tuple[int, str]] = {"charades": (64, "charades"), "activitynet": (100, "activitynet"),
                                         "tacos": (256, "charades")}
NOTES = {"tacos": "tacos: TACoS annotations are not shipped in engine/data; this workload is the "
                  "Charades-STA test queries on 256-clip videos (TACoS's max_pos_len)"}


@cache
def read_source(source: str) -> tuple[Record, ...]:
    """The records of one shipped annotation file (read once per process)."""
    if source == "charades":
        return tuple(read_charades(CHARADES_TEST, read_durations(CHARADES_DURATIONS)))
    return tuple(read_activitynet(ACTIVITYNET_VAL))


@dataclass(frozen=True)
class Workload:
    """Queries of one dataset, in file order, on videos of `n_clips` synthesized clips."""
    name: str
    n_clips: int
    records: tuple[Record, ...]
    seed: int = 0

    def take(self, count: int, start: int = 0) -> list[Record]:
        """`count` consecutive records from `start`, wrapping around the file."""
        return [self.records[(start + i) % len(self.records)] for i in range(count)]

    def features(self, vid: str, visual_dim: int = 1024) -> np.ndarray:
        """[n_clips, visual_dim] float32 N(0, 1) features, the same for a video in every call."""
        rng = np.random.default_rng([self.seed, zlib.crc32(vid.encode())])
        return rng.standard_normal((self.n_clips, visual_dim), dtype=np.float32)

    def vocab(self) -> tuple[dict[str, int], dict[str, int]]:
        return build_vocab(r.words for r in self.records)


def load_workload(name: str, seed: int = 0) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    n_clips, source = WORKLOADS[name]
    return Workload(name, n_clips, read_source(source), seed)


def random_model(workload: Workload, seed: int = 0) -> SeqPAN:
    """The dataset's preset SeqPAN over the workload's vocabulary, with trained-like random weights."""
    word_dict, char_dict = workload.vocab()
    return random_seqpan(preset(workload.name, len(word_dict), len(char_dict)), seed)


def requests(workload: Workload, records: list[Record], video_ids: list[str] | None = None) -> list[GroundingRequest]:
    """Engine requests for `records`; queries of one video id share one features array.

    `video_ids` (one per record) overrides the records' own videos, e.g. to regroup queries.
    """
    vids = video_ids or [r.vid for r in records]
    arrays = {vid: workload.features(vid) for vid in dict.fromkeys(vids)}
    return [GroundingRequest(arrays[vid], r.sentence, r.duration, video_id=vid, id=i)
            for i, (r, vid) in enumerate(zip(records, vids))]


def model_inputs(workload: Workload, records: list[Record], word_dict: dict[str, int], char_dict: dict[str, int],
                 device: torch.device) -> tuple[torch.Tensor, ...]:
    """One padded batch for `SeqPAN.forward` on `device`: (video, video_len, word_ids, char_ids).

    Every query carries its own copy of its video (the reference encodes each one)."""
    cache = {vid: workload.features(vid) for vid in dict.fromkeys(r.vid for r in records)}
    video = torch.from_numpy(np.stack([cache[r.vid] for r in records]))
    ids = [encode(r.words, word_dict, char_dict, workload.n_clips) for r in records]
    words, chars = pad_queries([w for w, _ in ids], [c for _, c in ids])
    video_len = torch.full((len(records),), workload.n_clips, dtype=torch.long)
    return tuple(t.to(device) for t in (video, video_len, torch.from_numpy(words).long(),
                                        torch.from_numpy(chars).long()))
