"""Checks of single values that the API, the engine, the micro-batcher and the CLI share (one copy
each): a positive integer, an IoU. Each raises the caller's error type, naming the value."""
from __future__ import annotations

from typing import Any

from .errors import UsageError


def shown(value: Any) -> str:
    """A value for an error message: a number (or bool) itself, anything else its type's name (a
    caller's string may be long or hold anything)."""
    return str(value) if isinstance(value, (int, float)) else type(value).__name__


def check_positive_int(name: str, value: Any, error: type[Exception] = UsageError) -> int:
    """`value` when it is an integer (not a bool) of at least 1; else `error` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{name} must be an integer of at least 1, got {shown(value)}")
    return value


def check_iou(name: str, value: Any, error: type[Exception] = UsageError) -> float | None:
    """`value` when it is None or a number (not a bool) in [0, 1]; else `error` naming `name`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise error(f"{name} must be an IoU between 0 and 1, got {shown(value)}")
    return value
