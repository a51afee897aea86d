"""An HTTP body `{"requests": [...]}` -> grounding requests, or for a bad entry that entry's error.

Each entry is read by `engine.requests.request_from_json`, the parser of `seqpan ground --requests`,
so an entry gets the answer (or the error) that a line of a requests file gets."""
from __future__ import annotations

from reference.errors import SeqPANError

from ..errors import RequestError
from ..limits import Limits
from ..requests import GroundingRequest, GroundingResult, json_error_id, parse_json, request_from_json


class BodyError(SeqPANError, ValueError):
    """A body that is not JSON, or has no `requests` list: the whole HTTP request is refused (400)."""


def parse_body(body: bytes, limits: Limits) -> list[GroundingRequest | GroundingResult]:
    """One entry per element of `requests`: a request (its id defaults to its position), or an
    error result naming the position. Feature paths stay as given: the engine confines them."""
    try:
        obj = parse_json(body)
    except RequestError as err:
        raise BodyError(f"body: {err}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("requests"), list):
        raise BodyError('body must be a JSON object {"requests": [...]}')
    entries: list[GroundingRequest | GroundingResult] = []
    for index, item in enumerate(obj["requests"]):
        try:
            entries.append(request_from_json(item, None, default_id=index, limits=limits))
        except RequestError as err:
            entries.append(GroundingResult(id=json_error_id(item), error=f"requests[{index}]: {err}"))
    return entries
