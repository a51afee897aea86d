"""The engine core's error types. Input errors derive from `reference.errors.SeqPANError`."""
from __future__ import annotations

from reference.errors import SeqPANError


class RequestError(SeqPANError, ValueError):
    """A request that cannot be served (bad features, empty query, bad duration, ...)."""


class BackendError(SeqPANError, RuntimeError):
    """A backend, device or precision that is unknown or cannot run here (missing package, no GPU, ...)."""


class UsageError(SeqPANError, ValueError):
    """Options that do not go together, or a value out of range, on the command line or in the API."""


class QueueFullError(RuntimeError):
    """The micro-batcher's bounded queue is full: the caller should back off and retry."""


class BatcherClosedError(RuntimeError):
    """The micro-batcher is shut down and takes no new requests."""


def one_line(message: str) -> str:
    """An error message on one line: line breaks inside it (from a path, a library's message) become spaces."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
