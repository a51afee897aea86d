"""A producer thread that runs an iterator ahead of its consumer through a bounded buffer: video
decoding and preprocessing overlap the network's forwards (PyAV, OpenCV and OpenVINO release the
GIL while they work)."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_END = object()  # the producer's iterator is exhausted
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone


class _Failure:
    """The exception that stopped the producer, re-raised in the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    """`with Prefetch(items, size) as it: for x in it: ...` yields `items` in order while a thread
    computes up to `size` of them ahead. An exception of the producer is raised in the consumer at
    its place in the sequence; leaving the block early stops the producer."""

    def __init__(self, items: Iterable, size: int):
        if size < 1:
            raise ValueError(f"the buffer must hold at least one item, got {size}")
        self.items, self.buffer = items, queue.Queue(maxsize=size)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="seqpan-video-producer", daemon=True)

    def _produce(self) -> None:
        iterator = iter(self.items)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            self._put(_Failure(exc))
        finally:
            if hasattr(iterator, "close"):  # a generator left early releases its files in this thread
                iterator.close()

    def _put(self, item) -> bool:
        """Waits for room; False when the consumer stopped first."""
        while not self.stopped.is_set():
            try:
                self.buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> Iterator:
        self.thread.start()
        return self._consume()

    def _consume(self) -> Iterator:
        while True:
            item = self.buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
