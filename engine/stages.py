"""The grounding step in three stages, split along what each depends on, so that the shapes to
compile add up instead of multiplying (`engine.shape_plan`):

* `VideoStage` (the query-independent video encoder): video [U, N, visual_dim], video_len [U]
  -> encoded video [U, N, dim];
* `QueryStage` (the video-independent query encoder): word_vectors [B, M, word_dim] (the word
  table's rows, looked up outside so that no compiled model holds the table), char_ids [B, M, W],
  query_len [B] -> encoded query [B, M, dim];
* `CrossStage` (SGPA, CQA, matching and the conditioned localizer): encoded video [B, N, dim],
  video_len [B], encoded query [B, M, dim], query_len [B], Gumbel noise [B, N, 4] -> start and
  end logits [B, N] (decoded afterwards by the model's span decoding) and match logits [B, N, 4].

Every backend runs these modules: `EagerStep` calls them with PyTorch (the reference and the
Triton kernels; one CUDA graph per stage shape on a GPU), the openvino backend compiles them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from reference.config import SeqPANConfig
from reference.matching import NUM_LABELS
from reference.model import SeqPAN
from reference.ops import check_padding, length_mask, weights_dtype

from .cuda_graphs import GraphCache, packed_weights_generation
from .shape_plan import ShapePlan

STAGE_NAMES = ("video", "query", "cross")


class VideoStage(nn.Module):
    """SeqPAN.encode_video with length inputs."""

    def __init__(self, model: SeqPAN, padding: str = "isolated"):
        super().__init__()
        check_padding(padding)
        self.model, self.padding = model, padding

    def forward(self, video: torch.Tensor, video_len: torch.Tensor) -> torch.Tensor:
        mask = length_mask(video_len, video.shape[1])
        return self.model.encode_video(video.to(weights_dtype(self.model)), mask, self.padding)


class QueryStage(nn.Module):
    """SeqPAN.encode_query on word vectors looked up outside, with length inputs."""

    def __init__(self, model: SeqPAN, padding: str = "isolated"):
        super().__init__()
        check_padding(padding)
        self.model, self.padding = model, padding

    def forward(self, word_vectors: torch.Tensor, char_ids: torch.Tensor, query_len: torch.Tensor) -> torch.Tensor:
        mask = length_mask(query_len, char_ids.shape[1])
        return self.model.encode_query(None, char_ids, mask, self.padding,
                                       word_vectors=word_vectors.to(weights_dtype(self.model)))


class CrossStage(nn.Module):
    """SeqPAN.localize on encoded videos and queries: start, end and match logits."""

    def __init__(self, model: SeqPAN, padding: str = "isolated"):
        super().__init__()
        check_padding(padding)
        self.model, self.padding = model, padding

    def forward(self, v: torch.Tensor, video_len: torch.Tensor, q: torch.Tensor, query_len: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v_mask, q_mask = length_mask(video_len, v.shape[1]), length_mask(query_len, q.shape[1])
        return self.model.localize(v, q, v_mask, q_mask, self.padding, noise)


STAGES: dict[str, type[nn.Module]] = {"video": VideoStage, "query": QueryStage, "cross": CrossStage}


def stage_inputs(cfg: SeqPANConfig, stage: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Inputs of `stage` at a plan `shape` (engine.shape_plan's): full lengths, zero features and word
    vectors, char ids of 1; what warm-up runs and a compiled stage is traced at."""
    if stage == "video":
        videos, clips = shape
        return torch.zeros(videos, clips, cfg.visual_dim), torch.full((videos,), clips)
    if stage == "query":
        queries, words, chars = shape
        return (torch.zeros(queries, words, cfg.word_dim), torch.ones(queries, words, chars, dtype=torch.long),
                torch.full((queries,), words))
    queries, clips, words = shape
    return (torch.zeros(queries, clips, cfg.dim), torch.full((queries,), clips), torch.zeros(queries, words, cfg.dim),
            torch.full((queries,), words), torch.zeros(queries, clips, NUM_LABELS))


def word_table(model: SeqPAN) -> torch.Tensor:
    """Every row of the model's word embedding ([num_words, word_dim]), as QueryStage takes them."""
    with torch.no_grad():
        return model.query_encoder.words(torch.arange(model.cfg.num_words, device=model.query_encoder.words.unk.device))


class EagerStep:
    """The engine's step in PyTorch (isolated padding): each stage called as a module, inside bf16
    autocast for the reference backend in bf16, and replayed from one CUDA graph per stage shape when
    `cuda_graphs` (the plan bounds how many)."""

    def __init__(self, model: SeqPAN, plan: ShapePlan, autocast: Callable[[], object], cuda_graphs: bool = False):
        self.model, self.plan, self.autocast = model, plan, autocast
        self.words = word_table(model)
        self.stages = {name: STAGES[name](model).eval() for name in STAGE_NAMES}
        generation = lambda: packed_weights_generation(model)  # noqa: E731 - the triton backend's repacks
        self.graphs = {name: GraphCache(self._runner(name), len(plan.shapes(name)), generation=generation)
                       for name in STAGE_NAMES} if cuda_graphs else None

    def _runner(self, name: str) -> Callable[..., tuple[torch.Tensor, ...]]:
        stage = self.stages[name]

        @torch.no_grad()
        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with self.autocast():
                out = stage(*inputs)
            return out if isinstance(out, tuple) else (out,)
        return run

    def run(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage `name` on `inputs` (a graph replay when graphs are on)."""
        return self.graphs[name](*inputs) if self.graphs is not None else self._runner(name)(*inputs)

    def word_vectors(self, word_ids: torch.Tensor) -> torch.Tensor:
        return self.words[word_ids.to(self.words.device)]

    def decode(self, start_logits: torch.Tensor, end_logits: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.model.predictor.decode(start_logits, end_logits, mask)

    @property
    def description(self) -> str:
        if self.graphs is None:
            return ""
        held = sum(len(g) for g in self.graphs.values())
        memory = sum(g.memory_bytes for g in self.graphs.values())
        return f", CUDA graphs ({held} held, {memory / 2**20:.1f} MiB)"
