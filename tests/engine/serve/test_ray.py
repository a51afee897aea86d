"""`seqpan serve --ray --replicas 2`: a local Ray Serve deployment answers as the engine does, from
both replicas, refuses registered videos (each replica would keep its own), and stops with exit 0 on SIGTERM."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.server_process import ServerProcess, free_port
from engine import GroundingEngine, GroundingRequest
from tests.engine.serve.conftest import assert_same_answers


@pytest.mark.slow
def test_two_ray_serve_replicas_answer_as_the_engine(serve_files):
    ckpt, root, _ = serve_files
    queries = ["person opens the door", "closes the window", "sits on chair", "takes book from shelf"]
    bodies = [{"requests": [{"id": i, "features": ("a.npy", "b.npy", "sub/c.npy")[i % 3], "query": queries[i % 4],
                             "duration": 10.0 + i}]} for i in range(40)]
    args = ["--ray", "--replicas", "2", "--checkpoint", str(ckpt), "--port", str(free_port()),
            "--features-root", str(root), "--max-wait-ms", "5"]
    with ServerProcess(args) as server:
        async def load():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                sem = asyncio.Semaphore(8)

                async def one(body):
                    async with sem:
                        return await client.post("/v1/ground", json=body)

                return await asyncio.gather(*(one(b) for b in bodies))

        responses = asyncio.run(load())
        replica_metric = httpx.get(f"{server.url}/metrics").text
        register = httpx.put(f"{server.url}/v1/videos/a", content=(root / "a.npy").read_bytes(), timeout=60)
        assert server.stop(timeout=90) == 0
    assert [r.status_code for r in responses] == [200] * len(bodies)
    replicas = {r.headers["x-seqpan-replica"] for r in responses}
    assert len(replicas) == 2, replicas
    assert any(f'seqpan_replica{{replica="{name}"}} 1.0' in replica_metric for name in replicas)
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu")
    local = [GroundingRequest(root / b["requests"][0]["features"], b["requests"][0]["query"],
                              b["requests"][0]["duration"], id=b["requests"][0]["id"]) for b in bodies]
    expected = [r.to_json() for r in engine.ground(local)]
    assert_same_answers([r.json()["results"][0] for r in responses], expected)
    assert "stopped" in server.stderr
    # each replica would keep its own registered videos, so several replicas keep none
    assert register.status_code == 404 and "keeps no registered videos" in register.json()["error"]
    assert "registered videos (PUT /v1/videos/ID) are off" in server.stderr
