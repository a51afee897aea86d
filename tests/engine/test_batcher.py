"""The micro-batcher under concurrent load: nothing lost or duplicated, back-pressure, clean shutdown."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine import BatcherClosedError, GroundingRequest, MicroBatcher, QueueFullError
from tests.engine.test_engine import CFG, make_engine


def request(i: int) -> GroundingRequest:
    feats = np.random.default_rng(i).standard_normal((8 + i % 20, CFG.visual_dim)).astype(np.float32)
    return GroundingRequest(feats, "person opens the door" if i % 2 else "a person sits on chair", 20.0, id=i)


def test_concurrent_submitters_get_their_own_results():
    engine = make_engine()
    expected = {r.id: r.to_json() for r in engine.ground([request(i) for i in range(60)])}
    got: dict[int, dict] = {}
    lock = threading.Lock()

    def submitter(start: int) -> None:
        futures = [(i, batcher.submit(request(i))) for i in range(start, 60, 4)]
        for i, f in futures:
            result = f.result(timeout=60).to_json()
            with lock:
                assert i not in got
                got[i] = result

    with MicroBatcher(engine, max_batch=16, max_wait_ms=5) as batcher:
        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(got) == list(range(60))
    for i in got:
        assert got[i]["id"] == i
        assert (got[i]["start_index"], got[i]["end_index"]) == (expected[i]["start_index"], expected[i]["end_index"])
        assert got[i]["score"] == pytest.approx(expected[i]["score"], rel=1e-5)
    assert batcher.batches_run < 60  # requests really were grouped


class SlowEngine:
    """Blocks in ground() until released, so the queue fills up."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def ground(self, requests):
        self.calls += 1
        self.release.wait(30)
        return make_engine().ground(requests)


def test_back_pressure_and_drain_on_close():
    slow = SlowEngine()
    batcher = MicroBatcher(slow, max_batch=2, max_wait_ms=1, max_queue=3)
    first = batcher.submit(request(0))
    time.sleep(0.2)  # the worker has taken request 0 and is blocked in ground()
    queued = [batcher.submit(request(i)) for i in (1, 2, 3)]
    with pytest.raises(QueueFullError, match="full"):
        batcher.submit(request(4))
    slow.release.set()
    batcher.close(timeout=60)
    assert all(f.done() and f.result().error is None for f in [first, *queued])
    with pytest.raises(BatcherClosedError):
        batcher.submit(request(5))


def test_engine_failure_fails_only_that_batch():
    class Broken:
        def ground(self, requests):
            raise RuntimeError("device lost")

    with MicroBatcher(Broken(), max_batch=4, max_wait_ms=1) as batcher:
        future = batcher.submit(request(0))
        with pytest.raises(RuntimeError, match="device lost"):
            future.result(timeout=10)
        assert batcher._worker.is_alive()
