"""Locust users for `python -m bench.serve_load`: each user POSTs the bodies of $SEQPAN_LOAD_BODIES (a
JSON list of /v1/ground bodies, taken in turn by all users) in a closed loop, without think time.
Every call's end time, latency, query count and status are written to $SEQPAN_LOAD_OUT (JSON) when
the run stops, so the caller computes throughput and exact percentiles itself."""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from locust import FastHttpUser, constant, events, task

BODIES = [(json.dumps(body).encode(), len(body["requests"]))
          for body in json.loads(Path(os.environ["SEQPAN_LOAD_BODIES"]).read_text())]
TURN = itertools.count()
CALLS: list[tuple[float, float, int, int]] = []  # (end, latency ms, queries, status)
HEADERS = {"content-type": "application/json"}


class GroundingClient(FastHttpUser):
    wait_time = constant(0)

    @task
    def ground(self) -> None:
        body, queries = BODIES[next(TURN) % len(BODIES)]
        started = time.perf_counter()
        with self.client.post("/v1/ground", data=body, headers=HEADERS, catch_response=True) as response:
            ended = time.perf_counter()
            CALLS.append((ended, (ended - started) * 1e3, queries, response.status_code))
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")


@events.test_stop.add_listener
def write_calls(**_) -> None:
    Path(os.environ["SEQPAN_LOAD_OUT"]).write_text(json.dumps(CALLS))
