"""seqpan's serving core: GroundingEngine (bucketing, batch-invariant batching, shared video encoding,
backends, CUDA graphs) and the MicroBatcher in front of it.

    from engine import GroundingEngine, GroundingRequest
"""
from reference.errors import SeqPANError

from .batcher import MicroBatcher
from .engine import GroundingEngine
from .errors import BackendError, BatcherClosedError, QueueFullError, RequestError, UsageError
from .limits import Limits
from .wire import request_from_json
from .requests import GroundingRequest, GroundingResult

__all__ = ["GroundingEngine", "GroundingRequest", "GroundingResult", "MicroBatcher", "Limits", "request_from_json",
           "SeqPANError", "RequestError", "BackendError", "UsageError", "QueueFullError", "BatcherClosedError"]
