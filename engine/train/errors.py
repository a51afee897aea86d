"""Training's error type."""
from __future__ import annotations

from reference.errors import SeqPANError


class TrainError(SeqPANError, ValueError):
    """A training run that cannot start or go on (resume mismatch, diverged loss)."""
