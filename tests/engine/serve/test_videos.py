"""Registered videos (engine/serve/videos.py) through the ASGI app in process: PUT, GET and DELETE
/v1/videos/{id}, grounding by id with the answers of the same features inline, the video encoder
run once for many queries, every refusal (sizes, dtypes, limits, odd ids, auth, body budget), the
store's bounds, and binary features in POST /v1/ground bodies."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import pickle

import httpx
import numpy as np
import pytest

from engine import GroundingEngine, GroundingRequest
from engine.cli import build_parser
from engine.cli.serve import settings_from_args
from engine.limits import Limits
from engine.serve.app import build_app
from engine.serve.guards import Refusal
from engine.serve.metrics import ServiceMetrics
from engine.serve.parsing import parse_body
from engine.serve.service import GroundingService
from engine.serve.settings import ServeSettings
from engine.serve.videos import VideoStore
from tests.engine.serve.conftest import assert_same_answers
from tests.engine.test_engine import CFG
from tests.engine.test_engine_caches import counting

API_KEY = "v1deo-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
D = CFG.visual_dim


def video(clips: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((clips, D)).astype(np.float32)


def npy(array: np.ndarray, **save) -> bytes:
    out = io.BytesIO()
    np.save(out, array, **save)
    return out.getvalue()


def binary(array: np.ndarray) -> dict:
    return {"shape": list(array.shape), "dtype": "float32", "base64": base64.b64encode(array.astype("<f4").tobytes()).decode()}


@pytest.fixture(scope="module")
def service(serve_files):
    """A loaded service (reference backend, no paths) with an API key and a 1 MiB body limit."""
    settings = ServeSettings(str(serve_files[0]), device="cpu", backend="reference", warmup=False, api_key=API_KEY,
                             max_batch=8, max_body_bytes=1 << 20)
    loaded = GroundingService(settings, ServiceMetrics())
    loaded.load()
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def engine(serve_files):
    return GroundingEngine.from_checkpoint(serve_files[0], device="cpu", backend="reference")


def calls(service: GroundingService, *requests: tuple, **settings) -> list[httpx.Response]:
    """Each (method, path[, keyword arguments of httpx]) in turn, on a new app (and so a new store) of
    `service`, its settings replaced by `settings` for this app."""
    original = service.settings
    service.settings = dataclasses.replace(original, **settings)
    try:
        app = build_app(service)
    finally:
        service.settings = original

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [await client.request(method, path, **{"headers": AUTH, **(kw[0] if kw else {})})
                    for method, path, *kw in requests]

    return asyncio.run(run())


def ground(*entries: dict) -> tuple:
    return "POST", "/v1/ground", {"json": {"requests": list(entries)}}


def entry(features, query: str = "person opens the door", **fields) -> dict:
    return {"features": features, "query": query, "duration": 30.0, **fields}


def test_register_look_ground_by_id_and_delete(service, engine):
    a, b = video(CFG.max_pos_len + 9, seed=1), video(7, seed=2)
    queries = ["person opens the door", "a person sits on a chair"]
    put, head, look, by_id, inline, replaced, look2, delete, gone, after = calls(
        service, ("PUT", "/v1/videos/walk-1.v_2", {"content": npy(a)}), ("HEAD", "/v1/videos/walk-1.v_2"),
        ("GET", "/v1/videos/walk-1.v_2"),
        ground(*(entry({"registered": "walk-1.v_2"}, q, id=q) for q in queries), entry({"registered": "nope"}, id="x")),
        ground(*(entry(a.tolist(), q, id=q) for q in queries)),
        ("PUT", "/v1/videos/walk-1.v_2", {"json": binary(b)}), ("GET", "/v1/videos/walk-1.v_2"),
        ("DELETE", "/v1/videos/walk-1.v_2"), ("GET", "/v1/videos/walk-1.v_2"),
        ground(entry({"registered": "walk-1.v_2"}), entry(b.tolist())))
    expected_a = {"id": "walk-1.v_2", "shape": [CFG.max_pos_len + 9, D], "dtype": "float32", "bytes": a.nbytes}
    assert (put.status_code, put.json()) == (201, expected_a) and (look.status_code, look.json()) == (200, expected_a)
    assert head.status_code == 200 and head.content == b""  # a HEAD looks, as GET does
    own = [r.to_json() for r in engine.ground([GroundingRequest(a, q, 30.0, id=q) for q in queries])]
    results = by_id.json()["results"]
    assert by_id.status_code == 200 and "error" not in results[0]
    assert_same_answers(results[:2], own)
    assert results[:2] == inline.json()["results"]  # the same server: bit for bit
    assert results[2] == {"id": "x", "error": "requests[2]: no video is registered under 'nope' (PUT /v1/videos/nope "
                                              "registers it; when the store is full the least recently used are dropped)"}
    assert replaced.status_code == 200 and look2.json()["shape"] == [7, D]
    assert delete.status_code == 204 and delete.content == b""
    assert gone.status_code == 404 and gone.json() == {"error": "no video is registered under 'walk-1.v_2'"}
    first, second = after.json()["results"]
    assert first["error"].startswith("requests[0]: no video is registered under 'walk-1.v_2'") and "start" in second


def test_queries_on_a_registered_video_run_the_video_encoder_once(service):
    stages = counting(service.engine)
    try:
        responses = calls(service, ("PUT", "/v1/videos/once", {"content": npy(video(20, seed=3))}),
                          *(ground(entry({"registered": "once"}, q)) for q in ("person opens the door", "the door",
                                                                                "a person sits", "sits on a chair")))
    finally:
        del service.engine.step.run  # the instance's counter off: the class's method again
    assert [r.status_code for r in responses] == [201] + [200] * 4
    assert all("start" in r.json()["results"][0] for r in responses[1:])
    assert stages["video"] == 1 and stages["cross"] == 4  # (a query seen in another test skips its own stage)


def test_binary_features_in_a_ground_body_answer_as_the_same_list(service, engine):
    v = video(CFG.max_pos_len * 3, seed=4)
    sent, listed = calls(service, ground(entry(binary(v), id=1)), ground(entry(v.tolist(), id=1)))
    assert sent.status_code == 200 and sent.json() == listed.json() and "start" in sent.json()["results"][0]
    assert_same_answers(sent.json()["results"], [engine.ground([GroundingRequest(v, "person opens the door", 30.0,
                                                                                  id=1)])[0].to_json()])


def test_base64_entries_pass_the_body_outline_at_its_tightest_bound():
    """The outline counts arrays, objects and strings (at most max_clips + 64 an entry): binary
    features are a few of them whatever their size, so a full body of them fits even at max_clips 1."""
    body = json.dumps({"requests": [{"id": f"q{i}", "features": binary(video(1, i)), "query": "door", "duration": 3}
                                    for i in range(16)]}).encode()
    entries = parse_body(body, Limits(max_clips=1), max_entries=16)
    assert [e.id for e in entries] == [f"q{i}" for i in range(16)]
    assert all(isinstance(e, GroundingRequest) and np.array_equal(e.features, video(1, i)) for i, e in enumerate(entries))


@pytest.mark.parametrize("body, message", [
    (npy(video(3, 0).astype(np.float64)), None),  # a float64 .npy is read as the engine reads files
    (npy(np.ones((3, D + 1), np.float32)), f"body: expected feature dimension {D}, got {D + 1}"),
    (npy(np.ones((0, D), np.float32)), "body: has zero clips"),
    (npy(np.full((2, D), np.inf, np.float32)), f"body: {2 * D} NaN/inf values, first in clip 0"),
    (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "body: expected real numbers, got dtype object"),
    (npy(np.ones((2, D), complex)), "body: expected real numbers, got dtype complex128"),
    (b"PK\x03\x04 an npz", "body: holds several arrays (.npz), expected one .npy array"),
    (pickle.dumps(np.ones((2, D))), "body: cannot read as .npy (not a NumPy .npy file)"),
    (npy(np.ones((3, D), np.float32))[:-8], "body: cannot read as .npy (truncated"),
    (b"", "body: cannot read as .npy (not a NumPy .npy file)"),
    (b'{"shape": [2, %d], "dtype": "float64", "base64": ""}' % D, 'features: dtype must be "float32" (little-endian)'),
    (b'{"shape": [2, %d], "dtype": ">f4", "base64": ""}' % D, 'features: dtype must be "float32" (little-endian)'),
    (b'{"shape": [2, %d], "dtype": "float32", "base64": "AAAA"}' % D, "features: base64 must be the"),
    (b'{"shape": [60000, %d], "dtype": "float32", "base64": ""}' % D, "features: 60000 clips, more than the limit"),
    (npy(np.ones((2, D), np.float32)).replace(b"(2, %d)" % D, b"(60000, %d)" % D),
     "body: 60000 clips, more than the limit of 50000"),
    (b'  {"registered": "a"}', 'binary features must be an object of exactly "shape", "dtype" and "base64"'),
    (b'{"shape": [2, %d], "dtype": "float32", "base64": NaN}' % D, "not valid JSON"),
])
def test_bad_uploads_are_one_line_400s_and_store_nothing(service, body, message):
    put, look = calls(service, ("PUT", "/v1/videos/v", {"content": body}), ("GET", "/v1/videos/v"))
    if message is None:
        assert put.status_code == 201 and look.json()["shape"] == [3, D]
        return
    assert put.status_code == 400 and message in put.json()["error"] and "\n" not in put.json()["error"], put.text
    assert look.status_code == 404


def test_bodies_over_the_limit_or_the_budget_are_refused(service):
    big = npy(np.ones(((1 << 20) // (4 * D) + 1, D), np.float32))  # over the 1 MiB body limit
    small = npy(np.ones((4, D), np.float32))
    too_large, look = calls(service, ("PUT", "/v1/videos/big", {"content": big}), ("GET", "/v1/videos/big"))
    assert (too_large.status_code, too_large.json()) == (413, {"error": f"body larger than {1 << 20} bytes"})
    assert look.status_code == 404
    busy, = calls(service, ("PUT", "/v1/videos/small", {"content": small}), max_bodies_bytes=len(small) - 1)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    past_store, = calls(service, ("PUT", "/v1/videos/small", {"content": small}), max_video_bytes=4 * 4 * D - 1)
    assert past_store.status_code == 413 and "larger than the store of registered videos" in past_store.json()["error"]


@pytest.mark.parametrize("path, status", [
    ("/v1/videos/%2e%2e", 400), ("/v1/videos/%2E", 400), ("/v1/videos/%2e%2e%2fx", 404), ("/v1/videos/..%2Fx", 404),
    ("/v1/videos/", 404), ("/v1/videos/" + "a" * 129, 400), ("/v1/videos/%C3%A9t%C3%A9", 400),
    ("/v1/videos/a%00b", 400), ("/v1/videos/a%20b", 400), ("/v1/videos/a%0A", 400), ("/v1/videos/~x", 400),
    ("/v1/videos/extract", 400), ("/v1/videos/" + "a" * 128, 201), ("/v1/videos/...", 201),
])
def test_ids_are_names_never_paths(service, path, status):
    put, = calls(service, ("PUT", path, {"content": npy(video(2, 0))}))
    assert put.status_code == status, put.text
    if status == 400:
        assert put.json()["error"].startswith(("a registered video's id must be 1 to 128 of A-Z a-z 0-9 . _ -",
                                               "'extract' names one of the page's routes"))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}])
def test_every_video_route_needs_the_api_key(service, headers):
    responses = calls(service, ("PUT", "/v1/videos/k", {"content": npy(video(2, 0))}),
                      ("PUT", "/v1/videos/k", {"content": npy(video(2, 0)), "headers": headers}),
                      ("GET", "/v1/videos/k", {"headers": headers}), ("DELETE", "/v1/videos/k", {"headers": headers}),
                      ("POST", "/v1/ground", {"json": {"requests": [entry({"registered": "k"})]}, "headers": headers}),
                      ("GET", "/v1/videos/k"))
    assert [r.status_code for r in responses] == [201, 401, 401, 401, 401, 200]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses[1:5])


def test_the_store_drops_the_least_recently_used_past_its_bounds():
    store = VideoStore(max_videos=3, max_bytes=10 * 4 * D)

    def features(clips: int) -> np.ndarray:
        return np.ones((clips, D), np.float32)

    assert store.put("a", features(2)) and store.put("b", features(2)) and store.put("c", features(2))
    assert store.get("a") is not None  # a is now the most recently used: b goes first
    assert store.put("d", features(2)) and list(store.videos) == ["c", "a", "d"] and store.bytes == 6 * 4 * D
    assert not store.put("c", features(5))  # replaced: c is now the most recent, 9 clips' bytes kept
    assert list(store.videos) == ["a", "d", "c"] and store.bytes == 9 * 4 * D
    assert store.put("e", features(4))  # past the bytes: a and d go (c alone plus e fit)
    assert list(store.videos) == ["c", "e"] and store.bytes == 9 * 4 * D
    with pytest.raises(Refusal) as refused:
        store.put("f", features(11))
    assert refused.value.status == 413 and list(store.videos) == ["c", "e"]
    assert store.delete("c") and not store.delete("c") and store.bytes == 4 * 4 * D and len(store) == 1
    kept = store.get("e")
    with pytest.raises(ValueError):
        kept[0, 0] = 2.0  # read-only: every request that names it shares it


def test_the_servers_store_bounds_and_metrics(service):
    clip_bytes = 4 * D
    responses = calls(service, *(("PUT", f"/v1/videos/{n}", {"content": npy(video(3, i))}) for i, n in enumerate("abc")),
                      ground(entry({"registered": "a"})),  # a used: b is the least recently used
                      ("PUT", "/v1/videos/d", {"content": npy(video(3, 9))}),
                      *(("GET", f"/v1/videos/{n}") for n in "abcd"), ("GET", "/metrics"),
                      max_videos=3, max_video_bytes=100 * clip_bytes)
    assert [r.status_code for r in responses[:5]] == [201, 201, 201, 200, 201]
    assert [r.status_code for r in responses[5:9]] == [200, 404, 200, 200]
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in responses[9].text.splitlines()
               if line.startswith("seqpan_registered_video")}
    assert samples == {"seqpan_registered_videos": 3.0, "seqpan_registered_video_bytes": 9.0 * clip_bytes}


def test_registering_can_be_turned_off(service):
    put, grounded = calls(service, ("PUT", "/v1/videos/a", {"content": npy(video(2, 0))}),
                          ground(entry({"registered": "a"}), entry(video(2, 0).tolist())), max_videos=0)
    assert put.status_code == 404 and "keeps no registered videos" in put.json()["error"]
    first, second = grounded.json()["results"]
    assert "keeps no registered videos" in first["error"] and "start" in second


def test_registering_waits_for_the_model(serve_files):
    waiting = GroundingService(ServeSettings(str(serve_files[0]), device="cpu"), ServiceMetrics())  # never loaded
    put, look = calls(waiting, ("PUT", "/v1/videos/a", {"content": npy(video(2, 0))}), ("GET", "/v1/videos/a"))
    assert put.status_code == 503 and put.headers["retry-after"] == "1" and look.status_code == 404


def test_the_store_bounds_come_from_seqpan_serve_flags(serve_files):
    def settings(*flags: str) -> ServeSettings:
        return settings_from_args(build_parser().parse_args(["serve", "--checkpoint", str(serve_files[0]), *flags]))

    assert (settings().max_videos, settings().max_video_bytes) == (1024, 256 << 20)
    chosen = settings("--max-videos", "0", "--max-video-store-mb", "1.5")
    assert (chosen.max_videos, chosen.max_video_bytes) == (0, 3 << 19)
