"""CPU time one POST /v1/ground costs in the ASGI app, grounding stubbed out: the app's routing, the
body's reading and parsing, the response's building and metrics, with the body parsed on the event
loop or in a worker thread, on asyncio's loop and on uvloop. CPU time (all threads), not wall time,
so that a shared machine moves it little.

    python -m bench.http_layer
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from engine.limits import Limits
from engine.requests import GroundingResult
from engine.serve import app as app_module
from engine.serve.metrics import ServiceMetrics
from engine.serve.settings import ServeSettings

QUERY = {"features": "v.npy", "query": "a person opens the door", "duration": 30.0}


class StubService:
    """A ready service whose grounding answers at once (a fixed span per request)."""

    def __init__(self):
        self.settings = ServeSettings("unused", device="cpu", warmup=False)
        self.metrics, self.ready, self.failure = ServiceMetrics(), True, None
        self.engine = type("Engine", (), {"limits": Limits()})()

    def start_loading(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def ground(self, entries):
        return [GroundingResult(e.id, 1.0, 2.0, 3, 4, 0.5) for e in entries]


async def cpu_us_per_call(app, body: bytes, calls: int) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/ground", "raw_path": b"/v1/ground", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}

    async def call() -> int:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client stays: no disconnect

        async def send(message):
            sent.append(message)

        await app(dict(scope), receive, send)
        return sent[0]["status"]

    assert await call() == 200
    began = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - began) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_layer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    print("| body | event loop | parsed | CPU us per call |\n|---|---|---|---|")
    inline = app_module.INLINE_PARSE_BYTES
    for queries in (1, 16):
        body = json.dumps({"requests": [QUERY] * queries}).encode()
        for loop, run in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
            for where, limit in (("in a thread", -1), ("on the loop", inline)):
                app_module.INLINE_PARSE_BYTES = limit
                cost = run(cpu_us_per_call(app_module.build_app(StubService()), body, args.calls))
                print(f"| {queries} quer{'y' if queries == 1 else 'ies'} ({len(body)} B) | {loop} | {where} "
                      f"| {cost:.0f} |", flush=True)
    app_module.INLINE_PARSE_BYTES = inline
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
