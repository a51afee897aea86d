"""Grounding a split with a model and scoring it: R@1 at IoU 0.3/0.5/0.7 and mIoU.

Predicted clip indices become seconds with index_to_time(s, e, num_clips, duration) and are
scored against the annotated moment in seconds (the original scored against its gold clip
indices turned back into seconds, which rounds the ground truth to clip boundaries).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reference.model import SeqPAN

from ..data.dataset import Batch, DatasetError, Record, Sample, collate, encode_records, load_video_features
from ..data.features import index_to_time
from ..data.metrics import score_moments
from ..engine import GroundingEngine
from ..requests import GroundingRequest


def predict(model: SeqPAN, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Start and end clip indices of a batch, each sample grounded as if alone (`isolated`): the
    validation predictions of training. (`seqpan eval` and the demo ground through the engine.)"""
    with torch.no_grad():
        out = model(batch.video, batch.video_len, batch.word_ids, batch.char_ids, padding="isolated")
    return out.start_index.cpu().numpy(), out.end_index.cpu().numpy()


@dataclass
class Evaluation:
    metrics: dict[str, float]  # r1_iou03, r1_iou05, r1_iou07, miou
    predictions: list[tuple[float, float]]  # (start, end) seconds, one per sample


def evaluate_samples(model: SeqPAN, samples: Sequence[Sample], features: dict[str, np.ndarray],
                     batch_size: int = 64, device: str | torch.device = "cpu") -> Evaluation:
    """Ground every sample (model in eval mode meanwhile) and score the moments."""
    if not samples:
        raise ValueError("nothing to evaluate: the split has no samples")
    was_training = model.training
    model.eval()
    predictions = []
    try:
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            starts, ends = predict(model, collate(chunk, features, device))
            predictions += [tuple(float(t) for t in index_to_time(int(s), int(e), x.num_clips, x.record.duration))
                            for s, e, x in zip(starts, ends, chunk)]
    finally:
        model.train(was_training)
    truth = [(x.record.start, x.record.end) for x in samples]
    return Evaluation(score_moments(predictions, truth), predictions)


def evaluate_records(model: SeqPAN, word_dict: dict[str, int], char_dict: dict[str, int],
                     records: Sequence[Record], features_dir: str | Path, device: str | torch.device = "cpu",
                     batch_size: int = 64) -> tuple[Evaluation, list[Sample], int]:
    """Read the records' features and ground every query with the GroundingEngine (queries of one
    video share its encoding), then score the moments.

    Returns the evaluation, the samples it covers, and how many records were skipped because
    their video has no feature file.
    """
    cfg = model.cfg
    features, _ = load_video_features(features_dir, [r.vid for r in records], cfg.max_pos_len, cfg.visual_dim)
    samples = encode_records(records, features, word_dict, char_dict, cfg.max_pos_len)
    if not samples:
        raise DatasetError(f"no query has a feature file in {features_dir}")
    engine = GroundingEngine(model, word_dict, char_dict, device=device, max_batch=batch_size)
    requests = [GroundingRequest(features[x.record.vid], x.record.sentence, x.record.duration,
                                 video_id=x.record.vid, id=i) for i, x in enumerate(samples)]
    results = engine.ground(requests)
    failed = [r for r in results if r.error is not None]
    if failed:
        raise DatasetError(f"{len(failed)} queries could not be grounded, e.g. {failed[0].error}")
    predictions = [(r.start, r.end) for r in results]
    truth = [(x.record.start, x.record.end) for x in samples]
    return Evaluation(score_moments(predictions, truth), predictions), samples, len(records) - len(samples)
