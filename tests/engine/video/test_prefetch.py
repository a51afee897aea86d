"""The producer thread: items in order, at most its buffer ahead of the consumer, its exception raised
in the consumer, and stopped (its iterator closed) when the consumer leaves early."""
import threading
import time

import pytest

from engine.video.prefetch import Prefetch

WAIT_S = 10  # generous: the machine running the tests may be loaded


def wait_for(condition):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the producer did not get there in time"
        time.sleep(0.01)


class Counting:
    """An endless iterator that counts the items it has produced and whether it was closed."""

    def __init__(self):
        self.produced, self.closed = 0, False

    def __iter__(self):
        try:
            while True:
                self.produced += 1
                yield self.produced - 1
        finally:
            self.closed = True


@pytest.mark.parametrize("size", [1, 3])
def test_the_producer_runs_ahead_by_at_most_its_buffer(size):
    source = Counting()
    with Prefetch(source, size) as items:
        for taken in range(1, 4):
            assert next(items) == taken - 1
            # the producer fills the buffer and holds one more item, waiting for room
            wait_for(lambda: source.produced == taken + size + 1)
            time.sleep(0.1)
            assert source.produced == taken + size + 1
    assert source.closed and not any(t.name == "seqpan-video-producer" for t in threading.enumerate())


def test_a_producer_error_reaches_the_consumer_in_its_place():
    def failing():
        yield from (1, 2)
        raise ValueError("decoder broke")

    got = []
    with pytest.raises(ValueError, match="decoder broke"), Prefetch(failing(), 4) as items:
        got.extend(items)
    assert got == [1, 2]


def test_a_consumer_error_stops_the_producer():
    source = Counting()
    with pytest.raises(RuntimeError, match="network failed"), Prefetch(source, 2) as items:
        next(items)
        raise RuntimeError("network failed")
    assert source.closed


def test_every_item_arrives_in_order():
    with Prefetch(range(1000), 7) as items:
        assert list(items) == list(range(1000))


def test_the_buffer_holds_at_least_one_item():
    with pytest.raises(ValueError, match="at least one"):
        Prefetch([], 0)
