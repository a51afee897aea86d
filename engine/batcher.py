"""Online micro-batcher: concurrent callers submit requests; a worker runs them in batches."""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from .checks import check_positive_int
from .engine import GroundingEngine
from .errors import BatcherClosedError, QueueFullError, UsageError
from .isolate import isolating
from .requests import GroundingRequest, GroundingResult

log = logging.getLogger("seqpan")


@dataclass
class _Pending:
    request: GroundingRequest
    future: Future
    submitted: float


class MicroBatcher:
    """Groups submitted requests into batches of up to `max_batch`, waiting at most `max_wait_ms`
    after the first request of a batch arrives. At most `max_queue` requests wait; more are refused
    with QueueFullError. Use as a context manager, or call `close()`: it drains in-flight work.

    The worker survives everything a request or the engine can do: a cancelled future is skipped,
    a batch whose `ground` raises is retried in halves so that only a request that fails alone gets
    the exception, and `close()` may be called at any moment, from any thread (a future's callback
    included).
    """

    def __init__(self, engine: GroundingEngine, max_batch: int = 64, max_wait_ms: float = 2.0,
                 max_queue: int = 4096):
        check_positive_int("max_batch", max_batch)
        check_positive_int("max_queue", max_queue)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) \
                or not 0 <= max_wait_ms < math.inf:
            raise UsageError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()  # bounded by _waiting
        self._waiting = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: list[_Pending] = []
        self.batches_run = 0
        self._worker = threading.Thread(target=self._loop, name="seqpan-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: GroundingRequest) -> Future:
        """Queue one request; the future resolves to its GroundingResult (a bad request's has `error`)."""
        future: Future = Future()
        with self._lock:  # no submit slips in after close() enqueued its sentinel
            if self._closed.is_set():
                raise BatcherClosedError("the batcher is closed")
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"request queue is full ({self.max_queue} waiting); retry later")
            self._waiting += 1
            self._queue.put(_Pending(request, future, time.perf_counter()))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish everything already queued, stop the worker (waiting at most
        `timeout` seconds for it; never when called from the worker itself, e.g. in a callback)."""
        with self._lock:
            if not self._closed.is_set():
                self._closed.set()
                self._queue.put(None)
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def __enter__(self) -> "MicroBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take(self, timeout: float | None = None) -> _Pending | None:
        item = self._queue.get(timeout=timeout)
        if item is not None:
            with self._lock:
                self._waiting -= 1
        return item

    def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._take()
                if first is None:
                    break
                batch = [first]
                deadline = first.submitted + self.max_wait
                while len(batch) < self.max_batch:
                    try:
                        item = self._take(timeout=max(deadline - time.perf_counter(), 0.0))
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._in_flight = [p for p in batch if _start(p.future)]
                if self._in_flight:
                    self._serve(self._in_flight)
                self._in_flight = []
        finally:  # reached early only by a BaseException: fail what is left rather than hang its callers
            self._fail_remaining()

    def _serve(self, items: list[_Pending]) -> None:
        """Ground `items`, resolving their futures; if that raises, ground each half on its own, down to
        single requests (`isolate.isolating`): an engine failure fails its request, never the worker."""
        def ground(batch: list[_Pending]) -> list[GroundingResult]:
            results: list[GroundingResult] = self.engine.ground([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the engine returned {len(results)} results for {len(batch)} requests")
            self.batches_run += 1
            for p, result in zip(batch, results):
                _resolve(p.future, result=result)
            return results

        isolating(items, ground, lambda p, err: _resolve(p.future, exception=err), _log_retry)

    def _fail_remaining(self) -> None:
        with self._lock:
            self._closed.set()
        stopped = BatcherClosedError("the batcher's worker stopped")
        for p in self._in_flight:
            _resolve(p.future, exception=stopped)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and _start(item.future):
                _resolve(item.future, exception=stopped)


def _log_retry(size: int, err: Exception) -> None:
    log.warning("seqpan: a batch of %d failed (%s: %s); retrying its halves", size, type(err).__name__, err)


def _start(future: Future) -> bool:
    """Mark a future running; False when its caller cancelled it (or resolved it) already."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:  # already running or done: not ours to run any more
        return False


def _resolve(future: Future, result: GroundingResult | None = None, exception: BaseException | None = None) -> None:
    """Set a running future's outcome; one already resolved (by its caller, say) is left alone."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
