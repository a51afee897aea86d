"""TensorRT for the localizer: optimization profiles per length bucket, the engine's cache key (the
cache itself, which never serves a stale or corrupt entry, is disk_cache.EngineCache), the engine
builder, and a runner on the current CUDA stream.

Profiles, cache keys and the cache itself are plain Python (testable without TensorRT); only the
builder, the runner and `engine_for` import `tensorrt`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from reference.errors import SeqPANError
from reference.localizer import LocalizerOutput
from reference.model import SeqPAN
from reference.ops import weights_dtype
from reference.precision import EXPORT_PRECISIONS, PRECISIONS, dtype_name, precision_name

from ..buckets import LENGTH_BUCKETS, length_buckets
from ..io.checkpoint import weights_hash
from .disk_cache import CacheKey, EngineCache, cache_root
from .onnx_export import GRAPH_VERSION, INPUT_NAMES, OUTPUT_NAMES, localizer_onnx

if TYPE_CHECKING:
    import onnx

DEFAULT_MAX_BATCH = 1024
DEFAULT_OPT_BATCH = 32
# TensorRT DataType names -> torch dtypes, for the runner's output buffers.
_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "BOOL": torch.bool}


class TrtError(SeqPANError, RuntimeError):
    """TensorRT is missing, there is no GPU, or an engine could not be built or run."""


class ProfileError(ValueError):
    """A (batch, length) shape that no optimization profile of the engine covers."""


@dataclass(frozen=True)
class Profile:
    """One optimization profile: batch and length ranges, tuned for (opt_batch, max_len)."""
    min_batch: int
    opt_batch: int
    max_batch: int
    min_len: int
    max_len: int

    def covers(self, batch: int, length: int) -> bool:
        return self.min_batch <= batch <= self.max_batch and self.min_len <= length <= self.max_len

    def input_shapes(self, dim: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) shape of every graph input."""
        lo, opt, hi = (self.min_batch, self.min_len), (self.opt_batch, self.max_len), (self.max_batch, self.max_len)
        return {name: (lo + (dim,), opt + (dim,), hi + (dim,)) if name == "x" else (lo, opt, hi)
                for name in INPUT_NAMES}

    def __str__(self) -> str:
        return f"batch {self.min_batch}..{self.max_batch} x length {self.min_len}..{self.max_len}"


def length_profiles(max_pos_len: int, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
                    buckets: tuple[int, ...] = LENGTH_BUCKETS) -> tuple[Profile, ...]:
    """One profile per length bucket, each covering the lengths above the previous bucket, batch 1..max_batch."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    ends = length_buckets(max_pos_len, buckets)
    starts = (1, *(end + 1 for end in ends[:-1]))
    return tuple(Profile(1, min(opt_batch, max_batch), max_batch, s, e) for s, e in zip(starts, ends))


def select_profile(profiles: tuple[Profile, ...], batch: int, length: int) -> int:
    """Index of the first profile covering (batch, length); ProfileError saying what was built otherwise."""
    for i, profile in enumerate(profiles):
        if profile.covers(batch, length):
            return i
    longest = max(p.max_len for p in profiles)
    hint = (f"the model takes at most {longest} clips" if length > longest else
            f"rebuild the engine with --max-batch {batch} or more, or split the batch")
    built = "; ".join(str(p) for p in profiles)
    raise ProfileError(f"no TensorRT profile covers batch {batch} x length {length} (built for {built}): {hint}")


@dataclass(frozen=True)
class EngineKey(CacheKey):
    """Everything an engine depends on; its digest names the cache entry."""
    weights_hash: str
    precision: str
    gpu: str
    tensorrt: str
    profiles: tuple[Profile, ...]
    graph_version: str = GRAPH_VERSION


def default_cache_dir() -> Path:
    return cache_root("trt")


def import_tensorrt():
    """The `tensorrt` module, or TrtError saying it is missing."""
    try:
        import tensorrt
    except (ImportError, OSError) as err:
        raise TrtError(f"TensorRT is not available ({err}); install the `tensorrt` package on a machine "
                       f"with an NVIDIA GPU, or use the compiled fallback") from None
    return tensorrt


def build_engine(proto: onnx.ModelProto, profiles: tuple[Profile, ...], dim: int) -> bytes:
    """Build a serialized engine from the exported localizer (features `dim` wide), one optimization
    profile per entry of `profiles`.

    The network is strongly typed: its precision is the ONNX graph's dtype (export it in fp16 or
    bf16 for those builds), so the masks' fill values are the ones the reference uses for that dtype
    (never -1e30 in fp16). ONNX's schema admits bf16 Conv only from opset 22, so bf16 builds rely on
    TensorRT's parser going by tensor types (not yet run on a machine with TensorRT).
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtError(f"TensorRT cannot parse the localizer graph: {errors}")
    config = builder.create_builder_config()
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.input_shapes(dim).items():
            trt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(trt_profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise TrtError("TensorRT failed to build the localizer engine (see its log above)")
    return bytes(blob)


class TrtLocalizer(nn.Module):
    """A built engine, called like ConditionedPredictor on CUDA tensors; runs on the current stream,
    reading and writing torch tensors in place (no host copies)."""

    def __init__(self, blob: bytes, profiles: tuple[Profile, ...]):
        super().__init__()
        trt = import_tensorrt()
        self.profiles = profiles
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise TrtError("TensorRT could not deserialize the engine (built by another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        self.input_dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype("x").name]
        self.active_profile = -1

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> LocalizerOutput:
        if not x.is_cuda:
            raise TrtError("the TensorRT localizer runs on CUDA tensors")
        batch, length = mask.shape
        profile = select_profile(self.profiles, batch, length)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if profile != self.active_profile:
            self.context.set_optimization_profile_async(profile, stream)
            self.active_profile = profile
        inputs = {"x": x.to(self.input_dtype).contiguous(), "mask": mask.contiguous(),
                  "conv_mask": torch.ones_like(mask) if conv_mask is None else conv_mask.contiguous()}
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in OUTPUT_NAMES:
            dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device=x.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream):
            raise TrtError("TensorRT failed to run the localizer engine")
        out = LocalizerOutput(**outputs)
        return LocalizerOutput(out.start_logits.to(x.dtype), out.end_logits.to(x.dtype), out.start_index.long(),
                               out.end_index.long(), out.score.to(x.dtype))


def precision_of(model: SeqPAN) -> str:
    """The TensorRT precision matching the model's parameter dtype."""
    dtype = weights_dtype(model)
    name = precision_name(dtype)
    if name is None:
        raise TrtError(f"TensorRT builds fp32, fp16 or bf16 engines; the model is {dtype_name(dtype)}")
    return name


@dataclass(frozen=True)
class CachedEngine:
    """A serialized engine, its profiles, where the cache keeps it, and "cached" or why it was built."""
    blob: bytes
    profiles: tuple[Profile, ...]
    path: Path
    status: str


def engine_for(model: SeqPAN, precision: str, cache_dir: str | Path | None = None,
               max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
               proto: onnx.ModelProto | None = None) -> CachedEngine:
    """The engine for `model` from the cache, or built from its ONNX export (or from `proto`, an
    export already checked against the model) and cached."""
    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise TrtError("TensorRT needs a CUDA GPU and none is visible")
    if precision not in EXPORT_PRECISIONS:
        raise TrtError(f"unknown precision {precision!r}; choose one of {', '.join(EXPORT_PRECISIONS)}")
    profiles = length_profiles(model.cfg.max_pos_len, max_batch, opt_batch)
    key = EngineKey(weights_hash(model), precision, torch.cuda.get_device_name(), trt.__version__, profiles)
    cache = EngineCache(cache_dir or default_cache_dir())
    blob, status = cache.get_or_build(
        key, lambda: build_engine(proto or localizer_onnx(model, PRECISIONS[precision].dtype), profiles, model.cfg.dim))
    return CachedEngine(blob, profiles, cache.paths(key)[0], status)


def trt_localizer(model: SeqPAN, precision: str | None = None, **options) -> TrtLocalizer:
    """A TensorRT localizer for `model` (engine from the cache when there), in the model's precision by default."""
    engine = engine_for(model, precision or precision_of(model), **options)
    return TrtLocalizer(engine.blob, engine.profiles)
