"""The one mapping from the original TensorFlow variable names to the reference's parameters."""
from __future__ import annotations

import re
from typing import Callable, Iterator, Mapping

import numpy as np
import torch

from .config import SeqPANConfig
from .errors import SeqPANError


class WeightsError(SeqPANError, ValueError):
    """Weights that do not fit the model: missing, unexpected or mis-shaped variables."""


Convert = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1)


def _dense_kernel(x: np.ndarray) -> np.ndarray:  # conv1d kernel [1, in, out] -> Linear [out, in]
    return x[0].T


def _char_filter(x: np.ndarray) -> np.ndarray:  # conv2d [1, k, in, out] -> Conv1d [out, in, k]
    return x[0].transpose(2, 1, 0)


def _depthwise(x: np.ndarray) -> np.ndarray:  # [k, 1, C, 1] -> grouped Conv1d [C, 1, k]
    return x[:, 0, :, 0].T[:, None, :]


def _pointwise(x: np.ndarray) -> np.ndarray:  # [1, 1, in, out] -> Linear [out, in]
    return x[0, 0].T


def _dense(tf: str, pt: str, bias: bool = True) -> Iterator[tuple[str, str, Convert]]:
    yield f"{tf}/kernel", f"{pt}.weight", _dense_kernel
    if bias:
        yield f"{tf}/bias", f"{pt}.bias", _flat


def _norm(tf: str, pt: str) -> Iterator[tuple[str, str, Convert]]:
    yield f"{tf}/layer_norm_scale", f"{pt}.weight", _identity
    yield f"{tf}/layer_norm_bias", f"{pt}.bias", _identity


def _conv_block(tf: str, pt: str, cfg: SeqPANConfig) -> Iterator[tuple[str, str, Convert]]:
    for i in range(cfg.conv_layers):
        yield from _norm(f"{tf}/layer_norm_{i}", f"{pt}.norms.{i}")
        layer = f"{tf}/depthwise_conv_layers_{i}"
        yield f"{layer}/depthwise_filter", f"{pt}.convs.{i}.depthwise", _depthwise
        yield f"{layer}/pointwise_filter", f"{pt}.convs.{i}.pointwise.weight", _pointwise
        yield f"{layer}/bias", f"{pt}.convs.{i}.pointwise.bias", _identity


def _sgpa(tf: str, pt: str) -> Iterator[tuple[str, str, Convert]]:
    for norm, name in (("layer_norm_1", "norm_1"), ("layer_norm_t", "norm_t"), ("layer_norm_2", "norm_2")):
        yield from _norm(f"{tf}/{norm}", f"{pt}.{name}")
    yield from _dense(f"{tf}/dense_1", f"{pt}.dense_1")
    yield from _dense(f"{tf}/dense_2", f"{pt}.dense_2")
    attn, pt_attn = f"{tf}/dual_multihead_attention", f"{pt}.attention"
    for name in ("query", "f_key", "f_value", "t_key", "t_value", "s_dense", "x_dense", "s_gate", "x_gate",
                 "guided_dense"):
        yield from _dense(f"{attn}/{name}", f"{pt_attn}.{name}")
    for bl in ("bilinear_1", "bilinear_2"):
        yield from _dense(f"{attn}/{bl}/dense_1", f"{pt_attn}.{bl}.dense_1", bias=False)
        yield from _dense(f"{attn}/{bl}/dense_2", f"{pt_attn}.{bl}.dense_2", bias=False)
        yield f"{attn}/{bl}/bias", f"{pt_attn}.{bl}.bias", _identity


def _cqa(tf: str, pt: str) -> Iterator[tuple[str, str, Convert]]:
    tri = f"{tf}/efficient_trilinear"
    yield f"{tri}/linear_kernel4arg0", f"{pt}.w_context", _flat
    yield f"{tri}/linear_kernel4arg1", f"{pt}.w_query", _flat
    yield f"{tri}/linear_kernel4mul", f"{pt}.w_mul", _flat
    yield from _dense(f"{tf}/dense", f"{pt}.dense", bias=False)


def tf_name_map(cfg: SeqPANConfig) -> list[tuple[str, str, Convert]]:
    """(TF variable name, reference parameter name, converter) for every weight of the model."""
    entries: list[tuple[str, str, Convert]] = [
        ("word_embs/word_table", "query_encoder.words.table", _identity),
        ("word_embs/unk", "query_encoder.words.unk", _identity),
        ("char_embs/char_table", "query_encoder.chars.table", _identity),
    ]
    for i in range(len(cfg.char_kernels)):
        entries += [(f"char_embs/filter_{i}", f"query_encoder.chars.convs.{i}.weight", _char_filter),
                    (f"char_embs/bias_{i}", f"query_encoder.chars.convs.{i}.bias", _identity)]
    entries += [*_dense("query_conv1d", "query_encoder.proj"), *_norm("q_layer_norm", "query_encoder.norm"),
                *_dense("video_conv1d", "video_encoder.proj"), *_norm("v_layer_norm", "video_encoder.norm"),
                ("pos_emb/position_embeddings", "pos_emb.table", _identity),
                *_conv_block("conv_block", "conv_block", cfg)]
    for i in range(cfg.attn_layer):
        entries += _sgpa(f"d_attn_{i}", f"sgpa.{i}")
    entries += [*_cqa("q2v_attn", "q2v"), *_cqa("v2q_attn", "v2q"),
                ("cq_cat/weighted_pooling/weight", "cq_concat.pool_weight", _flat),
                *_dense("cq_cat/dense", "cq_concat.dense"),
                ("label_emb", "matcher.label_emb", _identity),
                *_dense("matching_loss/dense", "matcher.dense")]
    fe = "predictor/feature_encoder"
    mab = f"{fe}/multihead_attention_block"
    entries += [(f"{fe}/pos_emb/position_embeddings", "predictor.encoder.pos_emb.table", _identity),
                *_conv_block(f"{fe}/conv_block", "predictor.encoder.conv_block", cfg),
                *_norm(f"{mab}/layer_norm_1", "predictor.encoder.norm_1"),
                *_dense(f"{mab}/top_self_attention/query", "predictor.encoder.query"),
                *_dense(f"{mab}/top_self_attention/key", "predictor.encoder.key"),
                *_dense(f"{mab}/top_self_attention/value", "predictor.encoder.value"),
                *_norm(f"{mab}/layer_norm_2", "predictor.encoder.norm_2"),
                *_dense(f"{mab}/dense", "predictor.encoder.dense")]
    for side in ("start", "end"):
        entries += [*_norm(f"predictor/{side}_layer_norm", f"predictor.{side}_norm"),
                    *_dense(f"predictor/{side}_hidden", f"predictor.{side}_hidden"),
                    *_dense(f"predictor/{side}_dense", f"predictor.{side}_dense")]
    return entries


def normalize_tf_name(name: str) -> str:
    """Strip a leading `var/` (golden files) and a trailing `:0` (TF tensor names)."""
    name = name[4:] if name.startswith("var/") else name
    return re.sub(r":\d+$", "", name)


def config_from_tf_vars(tf_vars: Mapping[str, np.ndarray], **overrides) -> SeqPANConfig:
    """Infer vocabulary sizes, dims and max_pos_len from the variables' shapes."""
    v = {normalize_tf_name(k): val for k, val in tf_vars.items()}
    try:
        inferred = dict(
            num_words=v["word_embs/word_table"].shape[0] + 2,
            word_dim=v["word_embs/word_table"].shape[1],
            num_chars=v["char_embs/char_table"].shape[0] + 1,
            char_dim=v["char_embs/char_table"].shape[1],
            visual_dim=v["video_conv1d/kernel"].shape[1],
            dim=v["video_conv1d/kernel"].shape[2],
            max_pos_len=v["pos_emb/position_embeddings"].shape[0],
            attn_layer=len({k.split("/")[0] for k in v if re.match(r"d_attn_\d+/", k)}),
        )
    except KeyError as err:
        raise WeightsError(f"missing TF variable {err.args[0]!r}") from None
    return SeqPANConfig(**{**inferred, **overrides})


def tf_to_state_dict(tf_vars: Mapping[str, np.ndarray], cfg: SeqPANConfig,
                     expected: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Convert TF variables to a reference state dict, checking names and shapes against `expected`."""
    v = {normalize_tf_name(k): val for k, val in tf_vars.items()}
    state: dict[str, torch.Tensor] = {}
    for tf_name, pt_name, convert in tf_name_map(cfg):
        if tf_name not in v:
            raise WeightsError(f"missing TF variable {tf_name!r}")
        value = torch.from_numpy(np.ascontiguousarray(convert(np.asarray(v[tf_name]))))
        if tuple(value.shape) != tuple(expected[pt_name]):
            raise WeightsError(f"TF variable {tf_name!r} has shape {tuple(np.shape(v[tf_name]))}, which does not "
                               f"fit {pt_name} {tuple(expected[pt_name])}")
        state[pt_name] = value
    unused = sorted(set(v) - {tf for tf, _, _ in tf_name_map(cfg)})
    if unused:
        raise WeightsError(f"unexpected TF variables: {', '.join(unused[:5])}")
    return state


def model_from_tf_vars(tf_vars: Mapping[str, np.ndarray], **overrides):
    """A reference SeqPAN (eval mode, float32) holding the given TF variables."""
    from .model import SeqPAN  # local import: the model module does not depend on this one

    cfg = config_from_tf_vars(tf_vars, **overrides)
    model = SeqPAN(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in tf_to_state_dict(tf_vars, cfg, expected).items()})
    return model.eval()
