"""GroundingService: the engine and its micro-batcher behind the HTTP API."""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Sequence

from reference.errors import SeqPANError

from ..batcher import MicroBatcher
from ..devices import available_cores, engine_threads, resolve_device
from ..engine import GroundingEngine
from ..wire import in_input_order
from ..requests import GroundingRequest, GroundingResult
from .metrics import ServiceMetrics
from .settings import ServeSettings

log = logging.getLogger("seqpan.serve")
INTERNAL_ERROR = "internal error while grounding this request"


def serving_threads() -> int:
    """The engine's CPU threads when serving: one fewer than the cores this process may use (at least
    one), leaving a core to the host work (HTTP, parsing, preparation). On the idle 2-core machine
    one thread served 1,126 queries/s at 32 clients to two threads' 1,029, at 0.99 server CPU ms a
    query to 1.58 (1.8x the queries on the machine under other load): two threads wait on each
    other whenever a Python thread takes one's core (docs/performance.md#served-path)."""
    return max(1, available_cores() - 1)


class GroundingService:
    """Loads and warms the engine (`load`, or `start_loading` in the background), then grounds
    parsed requests through one MicroBatcher; `ready` says when it can. A service that `owns_process`
    (a server's, not a test's) freezes what it loaded out of the garbage collector's sight."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics, owns_process: bool = False):
        self.settings, self.metrics = settings, metrics
        self.owns_process = owns_process  # a server process's service: what it loads lives as long as it
        self.engine: GroundingEngine | None = None
        self.batcher: MicroBatcher | None = None
        self.failure: Exception | None = None  # why loading failed
        self._ready = threading.Event()
        self._loader: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load the checkpoint, compile every shape of its plan (warm-up), start the micro-batcher (blocking)."""
        s = self.settings
        device = resolve_device(s.device)
        threads = s.threads if s.threads is not None or device.type != "cpu" else serving_threads()
        backend_options = engine_threads(threads, s.backend, device)
        engine = GroundingEngine.from_checkpoint(s.checkpoint, device=s.device, precision=s.precision,
                                                 backend=s.backend, max_batch=s.max_batch,
                                                 features_root=s.features_root,
                                                 allow_feature_paths=s.features_root is not None,
                                                 backend_options=backend_options)
        if s.warmup:
            engine.warm_up()  # every shape of the plan compiled: none on a request's path
        self.engine = engine
        self.metrics.watch_caches({"video": engine.encoded_videos, "query": engine.encoded_queries,
                                   "feature_file": engine.feature_files})
        self.batcher = MicroBatcher(engine, s.max_batch, s.max_wait_ms, s.max_queue, self.metrics.batch_size.observe)
        if self.owns_process:
            # what is loaded stays for the process's life: out of the collector's sight, a full collection no
            # longer walks it (the demo model's server: 186k objects, 84-99 ms a full collection, a pause
            # every request in flight would wait for; after the freeze ~0 ms)
            gc.freeze()
        self._ready.set()
        self.metrics.ready.set(1)

    def start_loading(self) -> None:
        """`load()` in a background thread (once); an exception it raises is kept in `failure`."""
        if self._loader is not None or self.ready:
            return

        def load_or_record_failure() -> None:
            try:
                self.load()
            except Exception as err:
                if not isinstance(err, (SeqPANError, OSError)):  # a bug, not the user's input
                    log.exception("loading the model failed")
                self.failure = err

        self._loader = threading.Thread(target=load_or_record_failure, name="seqpan-load", daemon=True)
        self._loader.start()

    async def ground(self, entries: Sequence[GroundingRequest | GroundingResult]) -> list[GroundingResult]:
        """Results in order: each request grounded by the micro-batcher, each error result as it is.
        Raises QueueFullError, having submitted nothing that is still to run, when there is no room."""
        assert self.batcher is not None, "ground() before the service is ready"
        requests = [e for e in entries if isinstance(e, GroundingRequest)]
        futures = self.batcher.submit_all(requests) if requests else []  # all or none
        self.metrics.queue_depth.inc(len(futures))
        for future in futures:
            future.add_done_callback(lambda _: self.metrics.queue_depth.dec())
        answers = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)
        results = in_input_order(entries, answers)
        for i, answer in enumerate(results):
            if isinstance(answer, BaseException):
                log.error("grounding failed", exc_info=answer)
                results[i] = GroundingResult(entries[i].id, error=INTERNAL_ERROR)
        for result in results:
            self.metrics.results.labels("ok" if result.error is None else "error").inc()
        return results

    def close(self) -> None:
        """Finish every queued request, then stop the micro-batcher."""
        if self.batcher is not None:
            self.batcher.close()

