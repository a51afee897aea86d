"""Online micro-batcher: concurrent callers submit requests; the next batch is prepared while one runs."""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    prepared: Any = None  # the engine's prepared request, once the preparer has made it


class MicroBatcher:
    """Groups submitted requests into batches of up to `max_batch`. At most `max_queue` requests wait;
    more are refused with QueueFullError. Use as a context manager, or call `close()`: it drains
    in-flight work.

    Two threads form a pipeline. The preparer takes whatever has been submitted and prepares it
    (`engine.prepare_all`: checks, tokens, features; a refused request is answered at once); the
    worker grounds prepared requests (`engine.run_prepared`). So the host work of the next batch is
    done while the model runs this one. When the worker is free it takes what is ready, up to
    `max_batch`, once `max_batch` are ready or the oldest ready one was submitted `max_wait_ms` ago:
    with the default 0 at once, so a lone request never waits, and under load batches fill with what
    arrived while the model ran. A body's requests given to `submit_all` are prepared together.

    The worker survives everything a request or the engine can do: a cancelled future is skipped
    (until its batch starts), a batch whose run raises is retried in halves so that only a request
    that fails alone gets the exception, and `close()` may be called at any moment, from any thread
    (a future's callback included). `on_batch(size)`, when given, is told of every batch run.
    """

    def __init__(self, engine: GroundingEngine, max_batch: int = 64, max_wait_ms: float = 0.0,
                 max_queue: int = 4096, on_batch: Callable[[int], None] | None = None):
        check_positive_int("max_batch", max_batch)
        check_positive_int("max_queue", max_queue)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) \
                or not 0 <= max_wait_ms < math.inf:
            raise UsageError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._submitted: queue.SimpleQueue[list[_Pending] | None] = queue.SimpleQueue()  # bounded by _waiting
        self._ready: deque[_Pending] = deque()  # prepared, in submission order
        self._waiting = 0  # submitted, and neither answered by the preparer nor taken by the worker
        self._lock = threading.Lock()
        self._ready_changed = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._prepared_all = False  # the preparer has stopped: nothing more becomes ready
        self._stopped = False  # a thread died: whatever is left fails
        self._preparing: list[_Pending] = []  # the preparer's group
        self._in_flight: list[_Pending] = []  # the worker's batch
        self.batches_run = 0
        self._preparer = threading.Thread(target=self._prepare_loop, name="seqpan-prepare", daemon=True)
        self._worker = threading.Thread(target=self._run_loop, name="seqpan-batcher", daemon=True)
        self._preparer.start()
        self._worker.start()

    def submit(self, request: GroundingRequest) -> Future:
        """Queue one request; the future resolves to its GroundingResult (a bad request's has `error`)."""
        return self.submit_all([request])[0]

    def submit_all(self, requests: Sequence[GroundingRequest]) -> list[Future]:
        """Queue several requests at once (prepared together, so they can share a batch), or none of
        them (QueueFullError) when the queue has no room for all; a future for each."""
        now = time.perf_counter()
        pending = [_Pending(request, Future(), now) for request in requests]
        with self._lock:  # no submit slips in after close() enqueued its sentinel
            if self._closed.is_set():
                raise BatcherClosedError("the batcher is closed")
            if self._waiting + len(pending) > self.max_queue:
                raise QueueFullError(f"request queue is full ({self.max_queue} waiting); retry later")
            self._waiting += len(pending)
            self._submitted.put(pending)
        return [p.future for p in pending]

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish everything already queued, stop both threads (waiting at most
        `timeout` seconds for them; never when called from one of them, e.g. in a callback)."""
        with self._lock:
            if not self._closed.is_set():
                self._closed.set()
                self._submitted.put(None)
        if threading.current_thread() in (self._preparer, self._worker):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._preparer, self._worker):
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))

    def __enter__(self) -> "MicroBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the preparer --------------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        try:
            stop = False
            while not stop:
                item = self._submitted.get()
                while item is not None:  # with whatever else was submitted meanwhile, up to max_batch
                    self._preparing += item
                    if len(self._preparing) >= self.max_batch:
                        break
                    try:
                        item = self._submitted.get_nowait()
                    except queue.Empty:
                        break
                stop = item is None
                self._prepare(self._preparing)
                self._preparing = []
        except BaseException:
            self._fail_remaining()
            raise
        finally:
            with self._lock:
                self._prepared_all = True
                self._ready_changed.notify_all()

    def _prepare(self, group: list[_Pending]) -> None:
        """Prepare `group`; answer its refused requests, hand the rest to the worker."""
        live = [p for p in group if not p.future.done()]  # not cancelled, not answered by its caller
        try:
            entries = _checked(self.engine.prepare_all([p.request for p in live]), len(live)) if live else []
        except Exception as err:  # noqa: BLE001 - the engine's failure is these requests' answer
            entries = [err] * len(live)
        ready = []
        for p, entry in zip(live, entries):
            if isinstance(entry, Exception):
                if _start(p.future):
                    _resolve(p.future, exception=entry)
            elif isinstance(entry, GroundingResult):  # refused
                if _start(p.future):
                    _resolve(p.future, result=entry)
            else:
                p.prepared = entry
                ready.append(p)
        with self._lock:
            self._waiting -= len(group) - len(ready)
            if self._stopped:  # the worker is gone: fail rather than wait for it
                self._waiting -= len(ready)
                _fail(ready, started=False)
                return
            self._ready.extend(ready)
            self._ready_changed.notify_all()

    # -- the worker ----------------------------------------------------------------------------
    def _run_loop(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._in_flight = [p for p in batch if _start(p.future)]
                if self._in_flight:
                    self._serve(self._in_flight)
                self._in_flight = []
        finally:  # reached early only by a BaseException: fail what is left rather than hang its callers
            _fail(self._in_flight, started=True)
            self._fail_remaining()

    def _next_batch(self) -> list[_Pending] | None:
        """The next batch to run (None once everything is done): up to max_batch ready requests, taken
        when there are max_batch of them, when the oldest was submitted max_wait ago, or when closing."""
        with self._lock:
            while not self._ready:
                if self._prepared_all:
                    return None
                self._ready_changed.wait()
            deadline = self._ready[0].submitted + self.max_wait
            while len(self._ready) < self.max_batch and not self._prepared_all and not self._closed.is_set():
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._ready_changed.wait(left)
            batch = [self._ready.popleft() for _ in range(min(len(self._ready), self.max_batch))]
            self._waiting -= len(batch)
            return batch

    def _serve(self, items: list[_Pending]) -> None:
        """Ground `items`, resolving their futures; if that raises, ground each half on its own, down to
        single requests (`isolate.isolating`): an engine failure fails its request, never the worker."""
        def ground(batch: list[_Pending]) -> list[GroundingResult]:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            results = _checked(self.engine.run_prepared([p.prepared for p in batch]), len(batch))
            self.batches_run += 1
            for p, result in zip(batch, results):
                result.id = getattr(p.request, "id", None)
                _resolve(p.future, result=result)
            return results

        isolating(items, ground, lambda p, err: _resolve(p.future, exception=err), _log_retry)

    def _fail_remaining(self) -> None:
        """After a thread died: refuse new work and fail every request not yet answered or running."""
        with self._lock:
            self._closed.set()
            self._stopped = True
            ready, self._ready = list(self._ready), deque()
            self._ready_changed.notify_all()
        _fail(self._preparing + ready, started=False)
        while True:
            try:
                item = self._submitted.get_nowait()
            except queue.Empty:
                break
            _fail(item or [], started=False)
        self._submitted.put(None)  # wakes the preparer, if it waits


def _checked(results: list, count: int) -> list:
    if len(results) != count:
        raise RuntimeError(f"the engine returned {len(results)} results for {count} requests")
    return results


def _fail(items: list[_Pending], started: bool) -> None:
    stopped = BatcherClosedError("the batcher's worker stopped")
    for p in items:
        if started or _start(p.future):
            _resolve(p.future, exception=stopped)


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
