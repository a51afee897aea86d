"""GroundingEngine: equals the reference's isolated answers, batch-invariant, deterministic,
shares video encodings, and names every bad request."""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from engine import GroundingEngine, GroundingRequest
from engine.compile.openvino_backend import runtime_precision as ob_runtime_precision
from engine.data.features import index_to_time, sample_features
from engine.data.text import encode, pad_queries, tokenize
from reference.model import SeqPAN
from reference.testing import random_model
from tests.helpers import assert_same_answer, small_config

CFG = small_config(max_pos_len=32)
MODEL = random_model(CFG, seed=2, dtype=torch.float32)
WORDS = ["person", "opens", "the", "door", "a", "closes", "window", "sits", "on", "chair", "walks", "into",
         "room", "takes", "book", "from", "shelf"]
WORD_DICT = {"<PAD>": 0, "<UNK>": 1, **{w: i + 2 for i, w in enumerate(WORDS[: CFG.num_words - 2])}}
CHAR_DICT = {"<PAD>": 0, "<UNK>": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz"[: CFG.num_chars - 2])}}


def make_engine(**kw) -> GroundingEngine:
    return GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", **kw)


def random_requests(n: int, seed: int) -> list[GroundingRequest]:
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    out = []
    for i in range(n):
        clips = rng.choice([1, 2, CFG.max_pos_len, CFG.max_pos_len + 5, rng.randint(1, 3 * CFG.max_pos_len)])
        query = " ".join(rng.choice(WORDS + ["zebra"]) for _ in range(rng.randint(1, 10)))
        out.append(GroundingRequest(gen.standard_normal((clips, CFG.visual_dim)).astype(np.float32),
                                    query, duration=rng.uniform(5, 100), id=i))
    return out


def reference_output(request: GroundingRequest):
    """The reference's output on this request alone (batch of one, video and chars cut to their lengths)."""
    feats = torch.from_numpy(sample_features(request.features, CFG.max_pos_len)).float()
    word_ids, char_ids = encode(tokenize(request.query), WORD_DICT, CHAR_DICT, CFG.max_pos_len)
    words, chars = pad_queries([word_ids], [char_ids])
    with torch.no_grad():
        return MODEL(feats[None], torch.tensor([feats.shape[0]]), torch.from_numpy(words).long(),
                     torch.from_numpy(chars).long(), padding="batch")


def reference_alone(request: GroundingRequest):
    """The reference's answer on this request alone: indices, score and times."""
    out = reference_output(request)
    s, e = int(out.start_index[0]), int(out.end_index[0])
    clips = sample_features(request.features, CFG.max_pos_len).shape[0]
    return s, e, float(out.score[0]), index_to_time(s, e, clips, request.duration)


def test_engine_equals_reference_isolated_answers():
    requests = random_requests(24, seed=0)
    results = make_engine(max_batch=8).ground(requests)
    for req, res in zip(requests, results):
        s, e, score, (t0, t1) = reference_alone(req)
        assert res.error is None and res.id == req.id
        assert (res.start_index, res.end_index) == (s, e)
        assert res.score == pytest.approx(score, rel=1e-4)
        assert (res.start, res.end) == pytest.approx((float(t0), float(t1)))
        assert 0 <= res.start_index <= res.end_index  # two marginal argmaxes of a triu matrix keep order


@pytest.mark.parametrize("seed", range(3))
def test_batch_invariance_and_determinism(seed):
    requests = random_requests(20, seed=10 + seed)
    engine = make_engine(max_batch=6)
    together = engine.ground(requests)
    again = engine.ground(requests)
    alone = [engine.ground([r])[0] for r in requests]
    shuffled_order = list(range(len(requests)))
    random.Random(seed).shuffle(shuffled_order)
    shuffled = engine.ground([requests[i] for i in shuffled_order])
    by_id = {r.id: r for r in shuffled}
    for t, a, g in zip(together, alone, again):
        s = by_id[t.id]
        assert (t.start_index, t.end_index) == (a.start_index, a.end_index) == (s.start_index, s.end_index)
        assert t.score == pytest.approx(a.score, rel=1e-5) and t.score == pytest.approx(s.score, rel=1e-5)
        assert t.to_json() == g.to_json()


def test_shared_video_encoding_gives_identical_answers(tmp_path):
    gen = np.random.default_rng(3)
    video = gen.standard_normal((40, CFG.visual_dim)).astype(np.float32)
    path = tmp_path / "v.npy"
    np.save(path, video)
    queries = ["person opens the door", "a person sits on chair", "walks into room", "takes book from shelf"]
    shared_array = [GroundingRequest(video, q, 30.0, id=q) for q in queries]
    shared_path = [GroundingRequest(str(path), q, 30.0, id=q) for q in queries]
    shared_id = [GroundingRequest(video.copy(), q, 30.0, video_id="v1", id=q) for q in queries]
    separate = [GroundingRequest(video.copy(), q, 30.0, id=q) for q in queries]
    engine = make_engine()
    assert len({p.video_key for p in engine.prepare_all(shared_array)}) == 1
    assert len({p.video_key for p in engine.prepare_all(separate)}) == 4
    expected = [r.to_json() for r in engine.ground(separate)]
    for group in (shared_array, shared_path, shared_id):
        got = [r.to_json() for r in engine.ground(group)]
        assert [(g["start_index"], g["end_index"]) for g in got] == [(e["start_index"], e["end_index"]) for e in expected]
        assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], rel=1e-5)


def count_encoded_videos(engine: GroundingEngine, monkeypatch) -> list[int]:
    """Wrap the engine's step (until the test ends): the returned list gets, per video-stage call, how
    many videos it encoded."""
    calls: list[int] = []
    run = engine.step.run

    def counting(name, *inputs):
        if name == "video":
            calls.append(inputs[0].shape[0])
        return run(name, *inputs)

    monkeypatch.setattr(engine.step, "run", counting)
    return calls


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_shared_video_is_encoded_once_per_batch(tmp_path, monkeypatch, backend):
    """The README's promise: requests that share a video (the same array, the same file, the same
    video_id with equal features) run the video encoder once per batch; others once each."""
    video = np.random.default_rng(4).standard_normal((40, CFG.visual_dim)).astype(np.float32)
    other = video + 1
    np.save(tmp_path / "v.npy", video)
    queries = ["person opens the door", "a person sits on chair", "walks into room", "takes book from shelf"]
    groups = {
        "same array": ([GroundingRequest(video, q, 30.0) for q in queries], 1),
        "same file": ([GroundingRequest(str(tmp_path / "v.npy"), q, 30.0) for q in queries], 1),
        "same video_id": ([GroundingRequest(video.copy(), q, 30.0, video_id="v1") for q in queries], 1),
        "copies": ([GroundingRequest(video.copy(), q, 30.0) for q in queries], 4),
        "one id, two videos": ([GroundingRequest(v, q, 30.0, video_id="v1")
                                for v, q in zip([video.copy(), other, video.copy(), other], queries)], 2),
    }
    engine = make_engine(backend=backend, video_cache=0)  # per batch: nothing kept from one call to the next
    encoded = count_encoded_videos(engine, monkeypatch)
    for name, (requests, videos) in groups.items():
        encoded.clear()
        results = engine.ground(requests)
        assert all(r.error is None for r in results), name
        assert encoded == [1] * videos, f"{name}: video-stage calls {encoded}, expected {videos} of one video each"


def test_from_checkpoint_passes_every_option(tmp_path):
    from engine.engine import resolve_device
    from engine.io.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu", precision="bf16", backend="reference", max_batch=3)
    assert (engine.precision, engine.backend_name, engine.max_batch) == ("bf16", "reference", 3)
    default = GroundingEngine.from_checkpoint(ckpt)
    assert default.device == resolve_device("auto") and default.max_batch == 64
    assert default.word_dict == WORD_DICT and default.char_dict == CHAR_DICT


def test_reference_backend_in_bf16_computes_in_bf16():
    """precision="bf16" on the reference backend runs the model under bf16 autocast, on CPU too: each
    score moves off the fp32 engine's by bf16 rounding (more than fp32 noise, within bf16's error)."""
    requests = random_requests(8, seed=11)
    fp32 = make_engine(backend="reference").ground(requests)
    bf16 = make_engine(backend="reference", precision="bf16").ground(requests)
    rel = [abs(b.score - f.score) / abs(f.score) for b, f in zip(bf16, fp32)]
    assert max(rel) > 1e-4, f"bf16 scores equal the fp32 ones (relative differences {rel}): no bf16 ran"
    assert max(rel) < 5e-2, rel


def test_seeded_noise_is_per_request_and_reproducible():
    requests = random_requests(6, seed=5)
    for i, r in enumerate(requests):
        r.seed = 100 + i
    engine = make_engine(max_batch=4)
    first = engine.ground(requests)
    alone = [engine.ground([r])[0] for r in requests]
    assert [(r.start_index, r.end_index) for r in first] == [(r.start_index, r.end_index) for r in alone]
    assert [r.score for r in first] == pytest.approx([r.score for r in alone], rel=1e-5)


def test_unknown_words_only_is_valid():
    result = make_engine().ground([GroundingRequest(np.ones((10, CFG.visual_dim), np.float32), "zebra xylophone", 12.0)])[0]
    assert result.error is None and 0 <= result.start_index <= result.end_index < 10


@pytest.mark.parametrize("change, message", [
    (dict(features=np.full((5, CFG.visual_dim), np.nan, np.float32)), "NaN"),
    (dict(features=np.full((5, CFG.visual_dim), np.inf, np.float32)), "inf"),
    (dict(features=np.ones((5, CFG.visual_dim + 1), np.float32)), "dimension"),
    (dict(features=np.ones((0, CFG.visual_dim), np.float32)), "clip"),
    (dict(features="/nonexistent/video.npy"), "not found"),
    (dict(query=""), "empty"),
    (dict(query="   \t "), "empty"),
    (dict(duration=0.0), "positive"),
    (dict(duration=-3.0), "positive"),
    (dict(duration=None), "duration"),
    (dict(duration=float("nan")), "positive"),
    (dict(duration="12"), "duration"),
])
def test_bad_requests_get_named_errors_and_others_are_served(change, message):
    good = GroundingRequest(np.ones((8, CFG.visual_dim), np.float32), "person opens the door", 10.0, id="good")
    fields = {**dict(features=good.features, query=good.query, duration=good.duration), **change}
    bad = GroundingRequest(**fields, id="bad")
    results = make_engine().ground([good, bad, good])
    assert results[1].error is not None and message.lower() in results[1].error.lower(), results[1].error
    assert results[0].error is None and results[2].error is None
    assert results[1].to_json() == {"id": "bad", "error": results[1].error}


def test_engine_on_triton_backend_equals_reference_backend():
    """The engine's kernel path (Triton interpreter on CPU) gives the reference backend's answers."""
    from reference.testing import init_like_trained

    cfg = small_config(max_pos_len=32, dim=64, num_heads=4)  # head size 16, as the kernels need
    model = init_like_trained(SeqPAN(cfg), seed=4)
    gen = np.random.default_rng(7)
    requests = [GroundingRequest(gen.standard_normal((clips, cfg.visual_dim)).astype(np.float32), query, 20.0, id=i)
                for i, (clips, query) in enumerate([(1, "door"), (32, "person opens the door"), (45, "a chair"),
                                                    (9, "sits on chair walks into room takes book")])]
    fast = GroundingEngine(model, WORD_DICT, CHAR_DICT, device="cpu", backend="triton", max_batch=2).ground(requests)
    ref = GroundingEngine(model, WORD_DICT, CHAR_DICT, device="cpu", backend="reference").ground(requests)
    for f, r in zip(fast, ref):
        assert f.error is None and (f.start_index, f.end_index) == (r.start_index, r.end_index)
        assert f.score == pytest.approx(r.score, rel=1e-4, abs=1e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("backend, precision", [("reference", "fp32"), ("triton", "fp32"), ("triton", "bf16")])
def test_engine_on_gpu_with_cuda_graphs_matches_cpu(backend, precision):
    """Replayed CUDA graphs (one per batch/bucket shape) give the CPU reference's answers: in fp32
    exactly; in bf16 a request may move only between two spans whose fp32 probabilities are within
    bf16's tolerance of each other (a near-tie), and every score is within that tolerance."""
    from reference.precision import PRECISIONS
    from reference.testing import init_like_trained

    cfg = small_config(max_pos_len=64, dim=128, num_heads=8, visual_dim=64)
    model = init_like_trained(SeqPAN(cfg), seed=5)
    gen = np.random.default_rng(9)
    requests = [GroundingRequest(gen.standard_normal((clips, cfg.visual_dim)).astype(np.float32),
                                 "person opens the door" if clips % 2 else "a person sits on chair", 30.0, id=clips,
                                 top_k=2)
                for clips in (1, 7, 33, 64, 90, 64)]
    ref = GroundingEngine(model, WORD_DICT, CHAR_DICT, device="cpu", backend="reference").ground(requests)
    engine = GroundingEngine(model, WORD_DICT, CHAR_DICT, device="cuda", backend=backend, precision=precision)
    assert engine.step.graphs is not None
    tolerance = PRECISIONS[precision].tolerance
    for _ in range(2):  # capture, then replay
        got = engine.ground(requests)
        for g, r in zip(got, ref):
            assert g.error is None and g.score == pytest.approx(r.score, rel=2 * tolerance), g.id
            if (g.start_index, g.end_index) != (r.start_index, r.end_index):
                assert precision == "bf16", f"request {g.id}: {g} vs the CPU's {r}"
                runner_up = r.moments[1]  # the fp32 model's next most probable span
                assert (g.start_index, g.end_index) == (runner_up["start_index"], runner_up["end_index"]), g.id
                assert runner_up["score"] >= (1 - 2 * tolerance) * r.score, f"request {g.id}: not a near-tie"


def test_cuda_graphs_are_captured_at_plan_shapes_only(monkeypatch):
    """With graphs on (here on CPU, the capture stood in by a plain call), every stage runs only at the
    shapes of the engine's plan, one graph each, however varied the load; answers stay the reference's."""
    import engine.cuda_graphs as cuda_graphs

    class PlainCall:  # a "graph" that calls its function: the shapes it is made for are what is checked
        def __init__(self, fn, inputs, warmup, pool):
            self.fn, self.memory_bytes = fn, 0

        def __call__(self, *inputs):
            return self.fn(*inputs)

    monkeypatch.setattr(cuda_graphs, "CapturedGraph", PlainCall)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", object)
    engine = make_engine(backend="reference", cuda_graphs=True, max_batch=8)
    plain = make_engine(backend="reference", max_batch=8)
    requests = random_requests(40, seed=21)
    assert [r.to_json() for r in engine.ground(requests)] == [r.to_json() for r in plain.ground(requests)]
    plan, graphs = engine.plan, engine.step.graphs
    shapes = {"video": plan.video_shapes(), "query": plan.query_shapes(), "cross": plan.cross_shapes()}
    for name, cache in graphs.items():
        assert len(cache) > 0 and cache.max_graphs == len(shapes[name])
        first_input_shapes = {key[0][0] for key in cache.graphs}
        if name == "video":
            assert first_input_shapes <= {(1, n, CFG.visual_dim) for _, n in shapes["video"]}
        elif name == "query":
            assert {key[1][0] for key in cache.graphs} <= {s for s in shapes["query"]}
        else:
            assert first_input_shapes <= {(b, n, CFG.dim) for b, n, _ in shapes["cross"]}


def test_a_batch_that_fails_is_narrowed_to_the_request_at_fault(monkeypatch):
    """A backend failure on one request (here: any batch holding a 13-second request raises) gives
    that request a one-line internal error; every other request of its batch gets its answer alone."""
    requests = [GroundingRequest(np.ones((16, CFG.visual_dim), np.float32) * (i + 1) / 10, "person opens the door",
                                 13.0 if i == 2 else 20.0, id=i) for i in range(5)]
    engine = make_engine(backend="reference")
    expected = {r.id: engine.ground([r])[0] for r in requests if r.id != 2}
    run_batch, sizes = engine.run_batch, []

    def failing(items, shape):
        sizes.append(len(items))
        if any(item.duration == 13.0 for item in items):
            raise RuntimeError("backend failed\non two lines")
        return run_batch(items, shape)

    monkeypatch.setattr(engine, "run_batch", failing)
    results = engine.ground(requests)
    assert results[2].id == 2 and results[2].error == "internal error: RuntimeError: backend failed on two lines"
    for r in results:
        if r.id != 2:
            assert_same_answer(r, expected[r.id])
    assert sizes == [5, 2, 3, 1, 2]  # halves down to the request at fault: 5 -> 2 | 3 -> 1 | 2


def test_device_and_option_errors_say_exactly_what_is_wrong(tmp_path):
    from engine.engine import PRECISIONS, resolve_device
    from engine.errors import BackendError, UsageError

    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == auto and resolve_device("cpu") == torch.device("cpu")
    assert GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, backend="reference").device == auto  # the default
    assert make_engine(backend="reference", max_batch=1).max_batch == 1
    missing = tmp_path / "missing"
    cases = [(dict(device="tpu"), "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
             (dict(device="meta"), "unknown device 'meta'; use auto, cpu, cuda or cuda:N"),
             (dict(precision="fp16"), f"precision must be one of {PRECISIONS}, got 'fp16'"),
             (dict(max_batch=0), "max_batch must be an integer of at least 1, got 0"),
             (dict(max_batch=True), "max_batch must be an integer of at least 1, got True"),
             (dict(max_batch=2.0), "max_batch must be an integer of at least 1, got 2.0"),
             (dict(features_root=missing), f"features root {str(missing)!r} is not a folder")]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda:1"), "device 'cuda' was asked for, but no CUDA GPU is available"))
    for options, message in cases:
        with pytest.raises((BackendError, UsageError)) as err:
            GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, **{"device": "cpu", "backend": "reference", **options})
        assert str(err.value) == message, options


def test_progress_counts_every_request_once():
    """progress gets 1 for each request refused while preparing, then each batch's size."""
    bad = GroundingRequest(np.zeros((3, CFG.visual_dim), np.float32), " ", 5.0, id="blank")
    requests = [bad, *random_requests(6, seed=3), None]
    calls: list[int] = []
    results = make_engine(backend="reference", max_batch=2).ground(requests, progress=calls.append)
    assert [r.error is None for r in results] == [False, *[True] * 6, False]
    assert (results[0].id, results[0].error) == ("blank", "query is empty")
    assert (results[-1].id, results[-1].error) == (None, "expected a GroundingRequest, got NoneType")
    assert calls[:2] == [1, 1] and all(1 <= c <= 2 for c in calls[2:]) and sum(calls) == len(requests)


def test_video_requests_go_through_the_video_source(tmp_path):
    """A `video` request's features (and, without a duration, the file's) come from the video source,
    called with the file's real path under the features root; the request is then served like one
    with those features."""
    from engine.data.features import FeatureError, PathRefused
    from engine.prepare import PATHS_REFUSED

    (tmp_path / "clip.mp4").write_bytes(b"")
    feats = np.random.default_rng(1).standard_normal((20, CFG.visual_dim)).astype(np.float32)
    seen = []

    def source(path):
        seen.append(path)
        if "broken" in str(path):
            raise FeatureError("clip cannot be decoded")
        return feats, 12.0

    (tmp_path / "broken.mp4").write_bytes(b"")
    engine = make_engine(backend="reference", video_source=source, features_root=tmp_path)
    query = "person opens the door"
    got = engine.ground([GroundingRequest(None, query, None, video="clip.mp4", id="a"),
                         GroundingRequest(None, query, 6.0, video="clip.mp4", id="b"),
                         GroundingRequest(None, query, None, video="broken.mp4", id="c"),
                         GroundingRequest(None, query, None, video="../clip.mp4", id="d")])
    for result, duration in zip(got, (12.0, 6.0)):
        assert_same_answer(result, engine.ground([GroundingRequest(feats, query, duration, id=result.id)])[0])
    assert got[2].error == "clip cannot be decoded" and got[3].error == str(PathRefused())
    assert seen == [str((tmp_path / n).resolve()) for n in ("clip.mp4", "clip.mp4", "broken.mp4")]
    video = GroundingRequest(None, query, None, video=str(tmp_path / "clip.mp4"))
    assert make_engine(backend="reference").ground([video])[0].error == \
        "video requests need an engine with a video source (seqpan ground --i3d W.pt)"
    closed = make_engine(backend="reference", video_source=source, allow_feature_paths=False)
    assert closed.ground([video])[0].error == PATHS_REFUSED


def test_one_request_that_overflows_is_its_own_error():
    """Finite features so large that the model's activations overflow give that request the
    non-finite error; the requests after it in the same batch are answered as alone."""
    rng = np.random.default_rng(8)
    huge = GroundingRequest(np.full((12, CFG.visual_dim), 3e38, np.float32), "person opens the door", 10.0)
    good = [GroundingRequest(rng.standard_normal((12, CFG.visual_dim)).astype(np.float32), "person opens the door",
                             10.0, id=i) for i in range(2)]  # the same shape as `huge`: one batch
    engine = make_engine(backend="reference")
    results = engine.ground([huge, *good])
    assert results[0].error == ("the model gave a non-finite score for this request "
                                "(NaN/inf weights, or an activation overflowed)")
    for got, request in zip(results[1:], good):
        assert_same_answer(got, engine.ground([request])[0])


def test_an_internal_error_is_one_line_of_at_most_500_characters(monkeypatch, caplog):
    from engine.engine import error_message

    message = error_message(RuntimeError("x" * 1000 + "\nsecond line"))
    assert message == "internal error: RuntimeError: " + "x" * 470
    assert [r.getMessage() for r in caplog.records if r.name == "seqpan"] == \
        ["seqpan: internal error serving a request: RuntimeError: " + "x" * 1000 + "\nsecond line"]


def test_the_engine_hands_its_options_to_each_request_and_the_backend(tmp_path):
    """limits, features_root and allow_feature_paths reach every request's checks; precision and
    backend_options reach the backend."""
    from engine import Limits
    from engine.data.features import PathRefused
    from engine.prepare import PATHS_REFUSED

    short = GroundingRequest(np.ones((4, CFG.visual_dim), np.float32), "person opens the door", 10.0)
    engine = make_engine(backend="reference", limits=Limits(max_duration=5.0))
    assert engine.ground([short])[0].error == "duration 10 s is more than the limit of 5 s"
    np.save(tmp_path / "v.npy", short.features)
    inside = dataclasses.replace(short, features="v.npy")
    rooted = make_engine(backend="reference", features_root=tmp_path)
    assert rooted.ground([inside])[0].error is None
    assert rooted.ground([dataclasses.replace(short, features="../v.npy")])[0].error == str(PathRefused())
    closed = make_engine(backend="reference", allow_feature_paths=False)
    assert closed.ground([dataclasses.replace(short, features=str(tmp_path / "v.npy"))])[0].error == PATHS_REFUSED
    compiled = make_engine(backend="openvino", precision="bf16", backend_options={"threads": 1})
    assert compiled.model.threads == 1
    assert compiled.model.precision == ob_runtime_precision("bf16")


def test_issue11_6_non_finite_model_output_is_an_error_not_nan():
    """Issue #11 (6): NaN weights gave `"score": NaN`; now that request gets an error."""
    model = type(MODEL)(CFG)
    model.load_state_dict(MODEL.state_dict())
    with torch.no_grad():
        model.predictor.start_dense.bias.fill_(float("nan"))
    features = np.random.default_rng(0).standard_normal((12, CFG.visual_dim)).astype(np.float32)
    request = GroundingRequest(features, "person opens the door", 10.0, id="good")
    result = GroundingEngine(model, WORD_DICT, CHAR_DICT, device="cpu").ground([request])[0]
    assert result.error is not None and "non-finite" in result.error
    json.dumps(result.to_json(), allow_nan=False)
