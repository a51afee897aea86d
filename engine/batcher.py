"""Online micro-batcher: concurrent callers submit requests; a worker runs them in batches."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from .engine import GroundingEngine
from .errors import BatcherClosedError, QueueFullError
from .requests import GroundingRequest, GroundingResult


@dataclass
class _Pending:
    request: GroundingRequest
    future: Future
    submitted: float


class MicroBatcher:
    """Groups submitted requests into batches of up to `max_batch`, waiting at most `max_wait_ms`
    after the first request of a batch arrives. At most `max_queue` requests wait; more are refused
    with QueueFullError. Use as a context manager, or call `close()`: it drains in-flight work."""

    def __init__(self, engine: GroundingEngine, max_batch: int = 64, max_wait_ms: float = 2.0,
                 max_queue: int = 4096):
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.batches_run = 0
        self._worker = threading.Thread(target=self._loop, name="seqpan-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: GroundingRequest) -> Future:
        """Queue one request; the future resolves to its GroundingResult."""
        future: Future = Future()
        with self._lock:  # no submit slips in after close() enqueued its sentinel
            if self._closed.is_set():
                raise BatcherClosedError("the batcher is closed")
            try:
                self._queue.put_nowait(_Pending(request, future, time.perf_counter()))
            except queue.Full:
                raise QueueFullError(f"request queue is full ({self._queue.maxsize} waiting); retry later") from None
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish everything already queued, stop the worker."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._queue.put(None)  # may block while the queue is full; the worker keeps draining it
        self._worker.join(timeout)

    def __enter__(self) -> "MicroBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = first.submitted + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(deadline - time.perf_counter(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            results: list[GroundingResult] = self.engine.ground([p.request for p in batch])
        except Exception as err:  # an engine failure fails this batch's futures, not the worker
            for p in batch:
                p.future.set_exception(err)
            return
        self.batches_run += 1
        for p, result in zip(batch, results):
            p.future.set_result(result)
