"""Retry in halves: run a batch, and when it raises run each half alone, down to single items, so that
only an item that fails alone gets the failure (the engine's batches and the micro-batcher's)."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")


def isolating(items: Sequence[Item], run: Callable[[Sequence[Item]], list[Out]],
              failed: Callable[[Item, Exception], Out],
              retrying: Callable[[int, Exception], None] | None = None) -> list[Out]:
    """`run(items)`; if it raises, the halves of `items` each run the same way, and an item that fails
    alone gets `failed(item, error)`. `retrying(len(items), error)`, when given, is told of each split."""
    try:
        return run(items)
    except Exception as err:  # noqa: BLE001 - narrowed down below, reported per item
        if len(items) == 1:
            return [failed(items[0], err)]
        if retrying is not None:
            retrying(len(items), err)
    half = len(items) // 2
    return isolating(items[:half], run, failed, retrying) + isolating(items[half:], run, failed, retrying)
