"""The micro-batcher under concurrent load: nothing lost or duplicated, back-pressure, clean shutdown."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine import BatcherClosedError, GroundingRequest, MicroBatcher, QueueFullError
from tests.engine.test_engine import CFG, make_engine
from tests.helpers import GroundOnlyEngine, assert_same_answer


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


def test_engine_failure_fails_only_that_batch():
    class Broken(GroundOnlyEngine):
        def ground(self, requests):
            raise RuntimeError("device lost")

    with MicroBatcher(Broken(), max_batch=4, max_wait_ms=1) as batcher:
        future = batcher.submit(request(0))
        with pytest.raises(RuntimeError, match="device lost"):
            future.result(timeout=10)
        assert batcher._worker.is_alive()


def test_an_engine_that_loses_results_fails_those_requests_by_name():
    """An engine returning fewer results than requests fails each request with the count, never
    resolving a future with another request's result."""
    class Lossy(GroundOnlyEngine):
        def ground(self, requests):
            return []

    with MicroBatcher(Lossy(), max_batch=4, max_wait_ms=1) as batcher:
        with pytest.raises(RuntimeError, match=r"^the engine returned 0 results for 1 requests$"):
            batcher.submit(request(0)).result(timeout=10)


def test_the_worker_is_a_named_daemon_thread():
    """A process that never closes its batcher still exits (daemon); thread dumps name the worker."""
    batcher = MicroBatcher(make_engine())
    assert batcher._worker.name == "seqpan-batcher" and batcher._worker.daemon
    batcher.close(timeout=10)


def test_a_future_its_caller_resolved_is_not_served():
    """A caller that resolves its own future while it waits (a timeout answer, say) keeps that answer
    and the engine never grounds the request."""
    gated = GatedEngine()
    with MicroBatcher(gated, max_batch=4, max_wait_ms=1) as batcher:
        first = batcher.submit(request(0))
        assert gated.entered.wait(30)  # the worker holds request 0 in ground()
        answered = batcher.submit(request(1))
        answered.set_result("answered by its caller")
        kept = batcher.submit(request(2))
        gated.release.set()
        assert first.result(timeout=30).error is None and kept.result(timeout=30).id == 2
    assert answered.result(timeout=0) == "answered by its caller"
    assert gated.batch_sizes == [1, 1]


class GatedEngine(GroundOnlyEngine):
    """The real engine behind a gate: ground() records its batch's size and start time, then waits
    for `release` (set from the start unless `gated`); it fails any batch holding a request whose id
    is in `poison`, as a backend might (an exception out of `ground`)."""

    def __init__(self, poison=(), gated=True, raises: BaseException | None = None):
        self.release, self.entered = threading.Event(), threading.Event()
        if not gated:
            self.release.set()
        self.poison = set(poison)
        self.raises = raises  # raised by every call, after the gate
        self.engine = make_engine()
        self.calls: list[tuple[int, float]] = []

    @property
    def batch_sizes(self) -> list[int]:
        return [size for size, _ in self.calls]

    def ground(self, requests):
        self.calls.append((len(requests), time.perf_counter()))
        self.entered.set()
        self.release.wait(30)
        if self.raises is not None:
            raise self.raises
        if any(getattr(r, "id", None) in self.poison for r in requests):
            raise RuntimeError("poisoned batch")
        return self.engine.ground(requests)


def test_issue11_1_cancelled_future_does_not_kill_the_worker():
    """Issue #11 (1): set_result on a cancelled future raised InvalidStateError in the worker; it
    died, every later future hung and close() blocked once the queue was full."""
    gated = GatedEngine()
    batcher = MicroBatcher(gated, max_batch=4, max_wait_ms=1, max_queue=2)
    first = batcher.submit(request(0))
    time.sleep(0.2)  # the worker holds request 0 in ground()
    cancelled = batcher.submit(request(1))
    assert cancelled.cancel()
    kept = batcher.submit(request(2))
    gated.release.set()
    assert first.result(timeout=30).error is None and kept.result(timeout=30).error is None
    later = [batcher.submit(request(i)) for i in (3, 4)]
    assert all(f.result(timeout=30).error is None for f in later)
    first.cancel()  # too late to cancel a finished one: nothing happens
    closer = threading.Thread(target=batcher.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and not batcher._worker.is_alive()


def test_issue11_2_a_failing_batch_fails_only_the_request_at_fault(caplog):
    """Issue #11 (2): every future of a micro-batch got the exception of one bad request (1,376
    of 2,000 good requests failed in a mixed run); now the batch is retried in halves."""
    gated = GatedEngine(poison={5})
    expected = {i: gated.engine.ground([request(i)])[0] for i in range(8)}
    batcher = MicroBatcher(gated, max_batch=8, max_wait_ms=50)
    futures = dict(enumerate(batcher.submit_all([request(i) for i in range(8)])))
    gated.release.set()
    for i, f in futures.items():
        if i == 5:
            with pytest.raises(RuntimeError, match="poisoned"):
                f.result(timeout=60)
        else:
            assert_same_answer(f.result(timeout=60), expected[i])
    batcher.close(timeout=30)
    # halves down to the request at fault: 8 -> 4 (good), 4 -> 2 -> 1 (good), 1 (poisoned); 2 (good)
    assert gated.batch_sizes == [8, 4, 4, 2, 1, 1, 2]
    retries = [r.getMessage() for r in caplog.records if r.name == "seqpan"]
    assert retries == [f"seqpan: a batch of {n} failed (RuntimeError: poisoned batch); retrying its halves"
                       for n in (8, 4, 2)]


@pytest.mark.parametrize("bad", [None, {"query": "x"},
                                 GroundingRequest([[1.0] * CFG.visual_dim], "door", 5.0, seed="x")])
def test_issue11_2_bad_submissions_get_their_own_error(bad):
    """Issue #11 (2): `submit(None)`, a dict or a bad seed sank the whole micro-batch."""
    with MicroBatcher(make_engine(), max_batch=8, max_wait_ms=20) as batcher:
        futures = [batcher.submit(request(0)), batcher.submit(bad), batcher.submit(request(1))]
        results = [f.result(timeout=60) for f in futures]
    assert results[0].error is None and results[2].error is None and results[1].error


@pytest.mark.parametrize("options, message", [
    (dict(max_queue=0), "max_queue must be an integer of at least 1, got 0"),
    (dict(max_queue=-1), "max_queue must be an integer of at least 1, got -1"),
    (dict(max_batch=0), "max_batch must be an integer of at least 1, got 0"),
    (dict(max_batch=True), "max_batch must be an integer of at least 1, got True"),
    (dict(max_wait_ms=float("nan")), "max_wait_ms must be a finite number >= 0, got nan"),
    (dict(max_wait_ms=float("inf")), "max_wait_ms must be a finite number >= 0, got inf"),
    (dict(max_wait_ms="2"), "max_wait_ms must be a finite number >= 0, got '2'"),
    (dict(max_queue=2.5), "max_queue must be an integer of at least 1, got 2.5")])
def test_issue11_9_batcher_options_are_checked(options, message):
    """Issue #11 (9): max_queue=0 accepted everything (an unbounded queue). Each bad option is named."""
    from engine import UsageError

    with pytest.raises(UsageError) as err:
        MicroBatcher(make_engine(), **options)
    assert str(err.value) == message


def test_smallest_options_are_valid_and_defaults_are_the_documented_ones():
    """max_batch=1 and max_queue=1 are the bounds' own values; the docstring's defaults: 64, 0 ms, 4096."""
    with MicroBatcher(make_engine(), max_batch=1, max_wait_ms=0, max_queue=1) as batcher:
        assert batcher.submit(request(0)).result(timeout=60).error is None
    with MicroBatcher(make_engine()) as batcher:
        assert (batcher.max_batch, batcher.max_wait, batcher.max_queue) == (64, 0.0, 4096)


def test_refusals_say_why():
    """A full queue names its bound; a closed batcher says it is closed."""
    engine = GatedEngine()
    batcher = MicroBatcher(engine, max_batch=1, max_wait_ms=0, max_queue=1)
    first = batcher.submit(request(0))
    deadline = time.monotonic() + 30
    while not engine.entered.is_set() and time.monotonic() < deadline:  # the worker holds the first
        time.sleep(0.01)
    second = batcher.submit(request(1))
    with pytest.raises(QueueFullError, match=r"^request queue is full \(1 waiting\); retry later$"):
        batcher.submit(request(2))
    engine.release.set()
    batcher.close()
    assert first.result(timeout=60).error is None and second.result(timeout=60).error is None
    with pytest.raises(BatcherClosedError, match="^the batcher is closed$"):
        batcher.submit(request(3))


class Fatal(BaseException):
    """What no engine failure handler catches (as KeyboardInterrupt or SystemExit in the worker)."""


def test_a_worker_killed_by_a_base_exception_fails_every_waiting_request_and_closes(monkeypatch):
    """The requests in flight and those still queued (a close() among them) get BatcherClosedError
    instead of hanging their callers, the batcher refuses new work, and the worker ends with that
    exception alone."""
    died_of = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died_of.append(args.exc_type))
    engine = GatedEngine(raises=Fatal())
    batcher = MicroBatcher(engine, max_batch=2, max_wait_ms=0, max_queue=10)
    futures = [batcher.submit(request(i)) for i in range(5)]
    assert engine.entered.wait(30)
    batcher.close(timeout=0)  # queued behind the requests: the worker never reaches it
    engine.release.set()
    for future in futures:
        with pytest.raises(BatcherClosedError, match="^the batcher's worker stopped$"):
            future.result(timeout=30)
    with pytest.raises(BatcherClosedError, match="^the batcher is closed$"):
        batcher.submit(request(5))
    batcher._worker.join(30)
    assert not batcher._worker.is_alive() and died_of == [Fatal]


def test_close_waits_at_most_its_timeout():
    """close(timeout) returns after about `timeout` seconds while the worker is stuck in the engine."""
    engine = GatedEngine()
    batcher = MicroBatcher(engine, max_batch=2, max_wait_ms=1)
    future = batcher.submit(request(0))
    began = time.monotonic()
    batcher.close(timeout=0.3)
    waited = time.monotonic() - began
    assert 0.25 <= waited < 10 and not future.done() and batcher._worker.is_alive()
    engine.release.set()
    assert future.result(timeout=60).error is None
    batcher._worker.join(30)


def test_close_from_a_done_callback_does_not_deadlock():
    batcher = MicroBatcher(make_engine(), max_batch=2, max_wait_ms=1)
    future = batcher.submit(request(0))
    future.add_done_callback(lambda f: batcher.close())
    assert future.result(timeout=60).error is None
    batcher._worker.join(30)
    assert not batcher._worker.is_alive()
    with pytest.raises(BatcherClosedError):
        batcher.submit(request(1))


def test_max_batch_bounds_every_batch_and_full_batches_go_at_once():
    """10 requests waiting behind a busy worker, max_batch 3: ground() gets 3, 3, 3, 1 (never more than
    max_batch, and a full batch does not wait for max_wait_ms)."""
    engine = GatedEngine()
    with MicroBatcher(engine, max_batch=3, max_wait_ms=1000) as batcher:
        futures = batcher.submit_all([request(i) for i in range(10)])
        engine.release.set()
        results = [f.result(timeout=60) for f in futures]
    assert [r.id for r in results] == list(range(10)) and all(r.error is None for r in results)
    assert engine.batch_sizes == [3, 3, 3, 1]
    assert batcher.batches_run == 4


def test_max_wait_ms_bounds_how_long_a_request_waits_for_company():
    """A lone request is served after max_wait_ms, not before (a second request within the wait joins
    its batch) and not much later; with max_wait_ms=0 it goes at once."""
    engine = GatedEngine(gated=False)
    with MicroBatcher(engine, max_batch=8, max_wait_ms=1500) as batcher:
        submitted = time.perf_counter()
        first = batcher.submit(request(0))
        second = batcher.submit(request(1))
        assert first.result(timeout=60).error is None and second.result(timeout=60).error is None
    assert engine.batch_sizes == [2]
    assert engine.calls[0][1] - submitted >= 1.5 - 0.05  # the worker waited for company until the deadline

    engine = GatedEngine(gated=False)
    with MicroBatcher(engine, max_batch=8, max_wait_ms=0) as batcher:
        submitted = time.perf_counter()
        assert batcher.submit(request(0)).result(timeout=60).error is None
    assert len(engine.calls) == 1 and engine.calls[0][1] - submitted < 1.0  # generous: the machine is shared

    engine = GatedEngine(gated=False)
    with MicroBatcher(engine, max_batch=8, max_wait_ms=300) as batcher:
        submitted = time.perf_counter()
        assert batcher.submit(request(0)).result(timeout=60).error is None
    assert 0.3 - 0.05 <= engine.calls[0][1] - submitted < 1.5  # 1.2 s of slack for a busy machine


def test_back_pressure_and_close_with_a_full_queue():
    """max_queue waiting requests refuse the next with QueueFullError; close() then, while the worker
    is busy and the queue full, takes no new request, does not refuse its own stop signal, and
    returns only once every queued request is served."""
    engine = GatedEngine()
    batcher = MicroBatcher(engine, max_batch=2, max_wait_ms=1, max_queue=3)
    first = batcher.submit(request(0))
    deadline = time.monotonic() + 30
    while not engine.calls and time.monotonic() < deadline:  # the worker holds request 0 in ground()
        time.sleep(0.01)
    queued = [batcher.submit(request(i)) for i in (1, 2, 3)]
    with pytest.raises(QueueFullError):
        batcher.submit(request(4))
    closer = threading.Thread(target=batcher.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and not any(f.done() for f in queued)  # draining, not dropping
    with pytest.raises(BatcherClosedError):
        batcher.submit(request(5))
    engine.release.set()
    closer.join(60)
    assert not closer.is_alive() and not batcher._worker.is_alive()
    assert [f.result(timeout=0).id for f in [first, *queued]] == [0, 1, 2, 3]
    assert sum(engine.batch_sizes) == 4


class GatedRun:
    """The real engine's two stages; `run_prepared` records its batch's size and then waits for
    `release`; `prepare_all` records how many requests each call prepared."""

    def __init__(self):
        self.engine = make_engine()
        self.release, self.running = threading.Event(), threading.Event()
        self.prepared: list[int] = []
        self.batch_sizes: list[int] = []

    def prepare_all(self, requests):
        entries = self.engine.prepare_all(requests)
        self.prepared.append(len(requests))
        return entries

    def run_prepared(self, items):
        self.batch_sizes.append(len(items))
        self.running.set()
        self.release.wait(30)
        return self.engine.run_prepared(items)


def wait_until(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_the_next_batch_is_prepared_while_one_runs_and_refusals_do_not_wait_for_it():
    """Pipelining: requests submitted while a batch runs are prepared (and a bad one answered) before
    that batch ends; when the model frees up they go as one batch, without waiting for company."""
    gated = GatedRun()
    with MicroBatcher(gated, max_batch=8, max_wait_ms=0) as batcher:
        first = batcher.submit(request(0))
        assert gated.running.wait(30)
        later = [batcher.submit(request(i)) for i in range(1, 6)]
        refused = batcher.submit(GroundingRequest(request(6).features, "   ", 20.0, id="blank"))
        assert wait_until(lambda: sum(gated.prepared) == 7)  # all prepared, the first batch still running
        assert refused.result(timeout=30).error == "query is empty" and not first.done()
        gated.release.set()
        results = [f.result(timeout=60) for f in [first, *later]]
    assert gated.batch_sizes == [1, 5]
    expected = gated.engine.ground([request(i) for i in range(6)])
    for got, want in zip(results, expected):
        assert_same_answer(got, want)


def test_requests_prepared_apart_and_batched_together_keep_their_own_videos():
    """Two callers' requests with the same video_id but other features, prepared in different calls
    and run in one batch, are each answered on their own features (keys never collide across calls)."""
    gated = GatedRun()
    mine = GroundingRequest(request(1).features, "person opens the door", 20.0, video_id="v", id="mine")
    theirs = GroundingRequest(request(3).features[: request(1).features.shape[0]], "person opens the door",
                              20.0, video_id="v", id="theirs")
    with MicroBatcher(gated, max_batch=8, max_wait_ms=0) as batcher:
        first = batcher.submit(request(0))
        assert gated.running.wait(30)
        futures = [batcher.submit(mine)]
        assert wait_until(lambda: sum(gated.prepared) == 2)
        futures.append(batcher.submit(theirs))
        assert wait_until(lambda: sum(gated.prepared) == 3)
        gated.release.set()
        results = [f.result(timeout=60) for f in futures]
        assert first.result(timeout=60).error is None
    assert gated.prepared == [1, 1, 1] and gated.batch_sizes == [1, 2]
    for got, alone in zip(results, [gated.engine.ground([r])[0] for r in (mine, theirs)]):
        assert_same_answer(got, alone)


def test_on_batch_is_told_each_batch_size_and_both_threads_end_on_close():
    sizes: list[int] = []
    gated = GatedRun()
    gated.release.set()
    batcher = MicroBatcher(gated, max_batch=4, max_wait_ms=200, on_batch=sizes.append)
    futures = [batcher.submit(request(i)) for i in range(6)]
    assert all(f.result(timeout=60).error is None for f in futures)
    batcher.close(timeout=30)
    assert sizes == gated.batch_sizes and sum(sizes) == 6 and max(sizes) <= 4
    assert not batcher._worker.is_alive() and not batcher._preparer.is_alive()
    assert batcher._preparer.name == "seqpan-prepare" and batcher._preparer.daemon


def test_a_preparer_killed_by_a_base_exception_fails_every_waiting_request_and_closes(monkeypatch):
    """The preparer dying (a BaseException out of prepare_all) answers every request not yet running
    with BatcherClosedError (the running batch finishes), refuses new work and lets close() return."""
    died_of = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died_of.append(args.exc_type))
    gated = GatedRun()

    def fatal(requests):
        if any(getattr(r, "id", None) == 2 for r in requests):
            raise Fatal()
        return gated.engine.prepare_all(requests)

    gated.prepare_all = fatal
    batcher = MicroBatcher(gated, max_batch=2, max_wait_ms=0)
    first = batcher.submit(request(0))
    assert gated.running.wait(30)  # request 0 runs; 1 and 2 are prepared while it does
    futures = batcher.submit_all([request(i) for i in (1, 2, 3)])
    assert wait_until(lambda: not batcher._preparer.is_alive())
    gated.release.set()
    assert first.result(timeout=30).error is None
    for future in futures:
        with pytest.raises(BatcherClosedError, match="^the batcher's worker stopped$"):
            future.result(timeout=30)
    with pytest.raises(BatcherClosedError, match="^the batcher is closed$"):
        batcher.submit(request(5))
    batcher.close(timeout=30)
    assert not batcher._worker.is_alive() and died_of == [Fatal]


def test_submit_all_queues_all_or_none():
    """A group that does not fit in the queue is refused whole, leaving the queue as it was; one that
    fits is prepared together and runs as one batch."""
    gated = GatedRun()
    with MicroBatcher(gated, max_batch=8, max_wait_ms=0, max_queue=3) as batcher:
        first = batcher.submit(request(0))
        assert gated.running.wait(30)  # taken by the worker: the queue is empty
        with pytest.raises(QueueFullError):
            batcher.submit_all([request(i) for i in range(1, 5)])
        futures = batcher.submit_all([request(i) for i in range(1, 4)])
        with pytest.raises(QueueFullError):
            batcher.submit(request(4))
        gated.release.set()
        assert [f.result(timeout=60).id for f in [first, *futures]] == [0, 1, 2, 3]
    assert gated.prepared == [1, 3] and gated.batch_sizes == [1, 3]
