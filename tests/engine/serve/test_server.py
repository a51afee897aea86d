"""`seqpan serve` as a real process on a free loopback port: answers equal the engine's, probes and
metrics, every refusal, path confinement, auth, 429 under overload, and SIGTERM during a burst."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from bench.server_process import ServerProcess
from engine import GroundingEngine, GroundingRequest, MicroBatcher, QueueFullError
from engine.data.features import PathRefused
from engine.prepare import PATHS_REFUSED
from engine.serve.app import build_app
from engine.serve.metrics import ServiceMetrics
from engine.serve.service import GroundingService
from engine.serve.settings import ServeSettings
from tests.engine.serve.conftest import assert_same_answers
from tests.engine.test_engine import CFG
from tests.helpers import GroundOnlyEngine, run_cli

API_KEY = "s3cret-token"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server(serve_files):
    """A server with a features root, an API key, batches of at most 8 and a 1 MiB body limit."""
    ckpt, root, _ = serve_files
    args = ["--checkpoint", str(ckpt), "--port", "0", "--features-root", str(root), "--max-batch", "8",
            "--max-body-mb", "1", "--api-key-env", "SEQPAN_TEST_KEY"]
    with ServerProcess(args, env={"SEQPAN_TEST_KEY": API_KEY}) as proc:
        yield proc


@pytest.fixture(scope="module")
def engine(serve_files):
    return GroundingEngine.from_checkpoint(serve_files[0], device="cpu")


def post(server: ServerProcess, body, headers=AUTH) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else None
    return httpx.post(f"{server.url}/v1/ground", content=content, json=None if content is not None else body,
                      headers=headers, timeout=60)


def metrics(server: ServerProcess) -> dict[tuple, float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def clip_list(clips: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((clips, CFG.visual_dim)).astype(np.float32)


def test_answers_equal_the_engine_and_seqpan_ground_requests(server, engine, serve_files, tmp_path):
    ckpt, root, _ = serve_files
    listed = clip_list(9, seed=1)
    body = [
        {"id": "a1", "features": "a.npy", "query": "person opens the door", "duration": 31.5},
        {"id": "a2", "features": "a.npy", "query": "closes the window", "duration": 31.5},
        {"id": "b", "features": "b.npy", "query": "a person sits on chair", "duration": 80},
        {"id": "c", "features": "sub/c.npy", "query": "takes book", "duration": 4},
        {"id": "list", "features": listed.tolist(), "query": "walks into room", "duration": 12, "video_id": "v"},
        {"id": "list2", "features": listed.tolist(), "query": "opens door", "duration": 12, "video_id": "v"},
        {"id": "seeded", "features": "a.npy", "query": "person opens the door", "duration": 31.5, "seed": 7},
        {"id": "zero-duration", "features": "a.npy", "query": "door", "duration": 0},
        {"id": "empty", "features": "sub/../b.npy", "query": "  ", "duration": 3},
        {"id": "overflow", "features": [[1e39] * CFG.visual_dim], "query": "door", "duration": 3},
    ]
    response = post(server, {"requests": body + [{"features": "b.npy", "query": "no id: its position", "duration": 3}]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    got = response.json()["results"]
    assert got[-1]["id"] == len(body) and "start" in got[-1]
    # the engine's own answers, for the requests it grounds
    local = [GroundingRequest(root / r["features"] if isinstance(r["features"], str) else listed, r["query"],
                              r["duration"], video_id=r.get("video_id"), id=r["id"], seed=r.get("seed"))
             for r in body[:7]]
    assert_same_answers(got[:7], [r.to_json() for r in engine.ground(local)])
    # what `seqpan ground --requests` writes for the same requests: equal, but that an entry's
    # error names its position in `requests` where the file's names the line
    lines = [{**r, "features": str(root / r["features"]) if isinstance(r["features"], str) else r["features"]}
             for r in body]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(tmp_path / "in.jsonl"),
            "--out", str(tmp_path / "out.jsonl"))
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for i, r in enumerate(written):
        if "error" in r:
            r["error"] = r["error"].replace(f"line {i + 1}: ", f"requests[{i}]: ")
    assert [r["id"] for r in written if "error" in r] == ["zero-duration", "empty", "overflow"]
    assert_same_answers(got[:-1], written)


def test_bad_entries_get_their_own_errors(server):
    good = {"id": "good", "features": "a.npy", "query": "person opens the door", "duration": 30}
    body = {"requests": [{"id": "no-query", "features": "a.npy", "duration": 3}, good, 7,
                         {"id": "dim", "features": [[1.0, 2.0]], "query": "door", "duration": 3},
                         {"id": "text", "features": [["x"] * CFG.visual_dim], "query": "door", "duration": 3},
                         {"id": "seed", "features": "a.npy", "query": "door", "duration": 3, "seed": "x"}, good]}
    results = post(server, body).json()["results"]
    assert [r["id"] for r in results] == ["no-query", "good", None, "dim", "text", "seed", "good"]
    assert results[1] == results[6] and "start" in results[1]
    errors = {r["id"]: r["error"] for r in results if "error" in r}
    # what the JSON parser refuses names the entry, as `seqpan ground` names the line; the engine's
    # own refusals are the engine's messages
    assert errors["no-query"].startswith("requests[0]: missing query")
    assert errors[None].startswith("requests[2]: expected a JSON object")
    assert errors["seed"].startswith("requests[5]: seed must be an integer")
    assert str(CFG.visual_dim) in errors["dim"] and "numbers" in errors["text"]


def test_health_ready_and_metrics_move(server, engine):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json()["engine"] == engine.description
    before = metrics(server)
    body = {"requests": [{"features": "a.npy", "query": "opens the door", "duration": 9}] * 3
            + [{"features": "a.npy", "query": "", "duration": 9}]}
    assert post(server, body).status_code == 200
    after = metrics(server)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("seqpan_http_requests_total", route="/v1/ground", code="200") == 1
    assert moved("seqpan_results_total", outcome="ok") == 3 and moved("seqpan_results_total", outcome="error") == 1
    assert moved("seqpan_request_latency_seconds_count") == 1
    assert moved("seqpan_batch_size_count") >= 1 and moved("seqpan_batch_size_sum") == 3  # the empty query never reaches it
    assert after[("seqpan_ready", ())] == 1 and after[("seqpan_queue_depth", ())] == 0
    # one batch of three requests on one video and one query text: each encoded once, then kept
    assert moved("seqpan_cache_misses_total", cache="video") <= 1 and moved("seqpan_cache_misses_total", cache="query") <= 1
    assert post(server, body).status_code == 200
    again = metrics(server)
    assert again[("seqpan_cache_hits_total", (("cache", "video"),))] >= after.get(
        ("seqpan_cache_hits_total", (("cache", "video"),)), 0) + 1
    assert again[("seqpan_cache_hits_total", (("cache", "query"),))] >= after.get(
        ("seqpan_cache_hits_total", (("cache", "query"),)), 0) + 1


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b'{"queries": []}', '{"requests": [...]}'),
    (b'[{"requests": []}]', '{"requests": [...]}'),
    (b'{"requests": {"id": 1}}', '{"requests": [...]}'),
    (b"[" * 100_000, '{"requests": [...]}'),
    (b'{"requests": [1, 2', "not valid JSON"),
    (b'{"requests": [{"a": "]}', "unterminated string"),
    (b'{"requests": []} []', "extra data"),
    (b'{"requests": [], "requests": []}', "given twice"),
    (b'{"\xff": 1, "requests": []}', "not valid UTF-8"),
])
def test_malformed_bodies_are_400(server, body, message):
    response = post(server, body)
    assert response.status_code == 400 and message in response.json()["error"]
    assert "Traceback" not in response.text and "\n" not in response.json()["error"]


def test_large_bodies_are_413_declared_or_streamed(server):
    big = b'{"requests": [' + b" " * (1 << 20) + b"]}"
    assert post(server, big).status_code == 413
    chunked = httpx.post(f"{server.url}/v1/ground", content=iter([big[:1000], big[1000:]]), headers=AUTH)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and "larger than 1048576 bytes" in chunked.json()["error"]
    assert metrics(server)[("seqpan_rejections_total", (("reason", "too_large"),))] >= 2


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"},
                                     {"Authorization": API_KEY}])
def test_api_key_is_required(server, headers):
    response = post(server, {"requests": []}, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]
    assert post(server, {"requests": []}).json() == {"results": []}


def test_unknown_routes_and_methods(server):
    assert httpx.get(f"{server.url}/nothing").status_code == 404
    assert httpx.get(f"{server.url}/v1/ground").status_code == 405


def test_an_idle_connection_outlasts_the_clients_pool_expiry(server):
    """A connection idle for longer than httpx's pool keeps one (5 s) is still open: a server that
    closed it then would race clients reusing it (requests failed under load at 64 clients)."""
    host, port = server.url.removeprefix("http://").split(":")
    request = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def status_line(conn: socket.socket) -> bytes:
        """One whole response read off the connection (headers, then Content-Length bytes of body, which
        may come in another segment); its status line. A closed connection gives b""."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += conn.recv(4096)
        return head.split(b"\r\n")[0]

    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        assert status_line(conn) == b"HTTP/1.1 200 OK"
        time.sleep(5.5)
        conn.sendall(request)
        assert status_line(conn) == b"HTTP/1.1 200 OK"


def test_paths_outside_the_root_are_refused_alike(server, serve_files):
    _, root, outside = serve_files
    refused = ["../outside/secret.npy", "../outside/missing.npy", str(outside / "secret.npy"),
               str(outside / "missing.npy"), "link.npy", "linkdir/secret.npy", "sub/../../outside/secret.npy",
               "/etc/passwd", "a.npy\x00.txt", "missing.npy", "sub", "."]
    served = ["sub/../a.npy", str(root / "a.npy"), "./sub/c.npy"]
    body = {"requests": [{"features": p, "query": "door", "duration": 3} for p in refused + served]}
    results = post(server, body).json()["results"]
    assert {r.get("error") for r in results[: len(refused)]} == {PathRefused.MESSAGE}
    assert all("start" in r for r in results[len(refused):])


def test_no_paths_without_a_root_and_429_when_the_queue_is_full(serve_files, engine):
    ckpt = serve_files[0]
    args = ["--checkpoint", str(ckpt), "--port", "0", "--max-queue", "3", "--max-batch", "1", "--max-wait-ms", "0"]
    with ServerProcess(args) as server:
        refused = post(server, {"requests": [{"features": "a.npy", "query": "door", "duration": 3}]}, headers={})
        assert refused.json()["results"][0]["error"] == PATHS_REFUSED
        too_many = post(server, {"requests": [{"features": "a.npy", "query": "door", "duration": 3}] * 4}, headers={})
        assert too_many.status_code == 413 and "at most 3" in too_many.json()["error"]

        bodies = [[{"id": f"{i}-{j}", "features": clip_list(9, seed=i).tolist(), "query": "opens the door",
                    "duration": 10.0} for j in range(3)] for i in range(30)]

        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/ground", json={"requests": b}) for b in bodies))

        before = metrics(server)
        responses = asyncio.run(burst())
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 429} and codes.count(429) >= 1
        for body, response in zip(bodies, responses):
            if response.status_code == 429:
                assert response.headers["retry-after"] == "1" and "queue is full" in response.json()["error"]
                continue
            local = [GroundingRequest(clip_list(9, seed=int(r["id"].split("-")[0])), r["query"], r["duration"],
                                      id=r["id"]) for r in body]
            assert_same_answers(response.json()["results"], [r.to_json() for r in engine.ground(local)])
        counted = metrics(server)
        assert counted[("seqpan_rejections_total", (("reason", "queue_full"),))] == codes.count(429)
        ran = counted[("seqpan_batch_size_sum", ())] - before[("seqpan_batch_size_sum", ())]
        assert ran == 3 * codes.count(200)  # nothing of a refused body was run
        again = post(server, {"requests": bodies[0]}, headers={})  # the batcher survived the refusals
        assert again.status_code == 200 and len(again.json()["results"]) == 3
        assert counted[("seqpan_queue_depth", ())] == 0


def test_sigterm_during_a_burst_answers_every_accepted_request_and_exits_0(serve_files, engine):
    ckpt = serve_files[0]
    args = ["--checkpoint", str(ckpt), "--port", "0", "--max-wait-ms", "3000", "--max-batch", "64"]
    bodies = [{"requests": [{"id": i, "features": clip_list(5 + i, seed=i).tolist(), "query": "sits on chair",
                             "duration": 20.0}]} for i in range(16)]
    with ServerProcess(args) as server:
        async def burst_then_stop():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                tasks = [asyncio.create_task(client.post("/v1/ground", json=b)) for b in bodies]
                for _ in range(300):  # until all 16 are accepted and wait for their batch (up to 3 s)
                    if "seqpan_ground_in_progress 16.0" in (await client.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.01)
                waiting = sum(not t.done() for t in tasks)
                server.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                with pytest.raises(httpx.TransportError):  # it no longer accepts connections
                    async with httpx.AsyncClient(base_url=server.url, timeout=5) as late:
                        await late.get("/health")
                return waiting, await asyncio.gather(*tasks)

        waiting, responses = asyncio.run(burst_then_stop())
        assert waiting == 16  # every request was accepted and still unanswered when the signal came
        assert server.proc.wait(60) == 0
    assert [r.status_code for r in responses] == [200] * 16
    local = [GroundingRequest(clip_list(5 + i, seed=i), "sits on chair", 20.0, id=i) for i in range(16)]
    expected = [r.to_json() for r in engine.ground(local)]
    assert_same_answers([r.json()["results"][0] for r in responses], expected)
    assert "stopping" in server.stderr and "stopped" in server.stderr and "Traceback" not in server.stderr


def test_ready_is_503_until_the_model_is_loaded_and_warm(serve_files):
    service = GroundingService(ServeSettings(str(serve_files[0]), device="cpu"), ServiceMetrics())
    body = {"requests": [{"features": clip_list(3, 0).tolist(), "query": "door", "duration": 3}]}

    async def probe():
        transport = httpx.ASGITransport(app=build_app(service))  # no lifespan: loading is ours to start
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            loading = [await client.get("/ready"), await client.post("/v1/ground", json=body)]
            alive = await client.get("/health")
            await asyncio.to_thread(service.load)
            return loading, alive, [await client.get("/ready"), await client.post("/v1/ground", json=body)]

    (ready, ground), alive, (ready2, ground2) = asyncio.run(probe())
    service.close()
    assert ready.status_code == 503 and ready.json() == {"status": "loading"} and alive.status_code == 200
    assert ground.status_code == 503 and ground.headers["retry-after"] == "1"
    assert ready2.status_code == 200 and ground2.status_code == 200 and "start" in ground2.json()["results"][0]


def test_a_body_refused_for_a_full_queue_runs_none_of_its_requests(serve_files):
    service = GroundingService(ServeSettings(str(serve_files[0]), device="cpu", warmup=False), ServiceMetrics())
    service.load()
    entered, gate, grounded = threading.Event(), threading.Event(), []

    class GatedEngine(GroundOnlyEngine):  # the service's engine, held at the gate until the test opens it
        def ground(self, requests, progress=None):
            entered.set()
            gate.wait(30)
            grounded.extend(r.id for r in requests)
            return service.engine.ground(requests)

    service.batcher.close()
    service.batcher = MicroBatcher(GatedEngine(), max_batch=1, max_wait_ms=0, max_queue=3)

    def requests(*ids):
        return [GroundingRequest(clip_list(4, seed=0), "opens the door", 3.0, id=i) for i in ids]

    async def scenario():
        first = asyncio.create_task(service.ground(requests("a")))
        await asyncio.to_thread(entered.wait, 30)  # "a" is running; the queue is empty
        second = asyncio.create_task(service.ground(requests("b1", "b2")))
        await asyncio.sleep(0.05)  # b1, b2 wait: one place left
        with pytest.raises(QueueFullError):
            await service.ground(requests("c1", "c2"))  # c1 fits, c2 does not: the body is refused
        gate.set()
        return await first, await second

    answered = asyncio.run(scenario())
    service.close()
    assert [[r.id for r in results] for results in answered] == [["a"], ["b1", "b2"]]
    assert grounded == ["a", "b1", "b2"]  # c1 was withdrawn before it ran
    assert service.metrics.registry.get_sample_value("seqpan_queue_depth") == 0


def test_a_checkpoint_that_fails_to_load_stops_the_server_with_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--checkpoint", str(bad), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "seqpan serve: error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{tmp}/missing.safetensors"], "checkpoint not found"),
    (["--checkpoint", "{ckpt}", "--features-root", "{tmp}/nowhere"], "not a folder"),
    (["--checkpoint", "{ckpt}", "--api-key-env", "SEQPAN_UNSET_VARIABLE"], "not set or empty"),
    (["--checkpoint", "{ckpt}", "--replicas", "2"], "need --ray"),
    (["--checkpoint", "{ckpt}", "--port", "70000"], "--port"),
    (["--checkpoint", "{ckpt}", "--max-body-mb", "0"], "--max-body-mb"),
    (["--checkpoint", "{ckpt}", "--max-bodies-mb", "8"], "--max-bodies-mb must be in [--max-body-mb"),
    (["--checkpoint", "{ckpt}", "--header-timeout", "0"], "--header-timeout must be in (0, 86400]"),
    (["--checkpoint", "{ckpt}", "--shutdown-timeout", "-1"], "--shutdown-timeout must be in (0, 86400]"),
    (["--checkpoint", "{ckpt}", "--max-connections", "0"], "--max-connections"),
    (["--checkpoint", "{ckpt}", "--max-videos", "-1"], "--max-videos must be in 0..1000000"),
    (["--checkpoint", "{ckpt}", "--max-video-store-mb", "0"], "--max-video-store-mb must be in (0, 1048576]"),
])
def test_bad_options_are_one_line_exit_2(serve_files, tmp_path, args, message):
    result = run_cli("serve", *[a.format(tmp=tmp_path, ckpt=serve_files[0]) for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line_exit_2(serve_files):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", "--checkpoint", str(serve_files[0]), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2 and "cannot listen on 127.0.0.1:" in result.stderr


def test_ready_says_when_loading_failed_without_details():
    """/ready of a replica whose model failed to load is a 503 with one line (the log has the
    reason), not a server error."""
    from types import SimpleNamespace

    from engine.errors import UsageError
    from engine.serve.app import build_app
    from engine.serve.metrics import ServiceMetrics

    async def get_ready(service) -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/ready")

    for failure, status in ((None, "loading"), (UsageError("/secret/path.safetensors: bad"),
                                                 "failed to load the model (see the server's log)")):
        service = SimpleNamespace(settings=ServeSettings("unused.safetensors"), metrics=ServiceMetrics(), ready=False,
                                  failure=failure)
        response = asyncio.run(get_ready(service))
        assert (response.status_code, response.json()) == (503, {"status": status})


def test_serving_leaves_a_core_to_the_host_work(serve_files, monkeypatch):
    """On CPU without --threads, the engine's OpenVINO threads (and torch's) are one fewer than the
    cores the process may use, at least one; --threads overrides that."""
    from engine.serve.service import serving_threads

    for cores, expected in (({0, 1, 2, 3}, 3), ({0, 1}, 1), ({5}, 1)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, c=cores: c)
        assert serving_threads() == expected
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2})
    torch_threads = torch.get_num_threads()
    for threads, expected in ((None, 2), (3, 3)):
        service = GroundingService(ServeSettings(str(serve_files[0]), device="cpu", warmup=False, threads=threads),
                                   ServiceMetrics())
        service.load()
        try:
            assert service.engine.model.threads == expected and torch.get_num_threads() == expected
        finally:
            service.close()
            torch.set_num_threads(torch_threads)
