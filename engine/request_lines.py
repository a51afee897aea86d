"""Requests from the lines of a JSONL file or the rows of a table: each a request, or the error
result that names its line (or row), so that one bad entry never fails another."""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Callable, Sequence

from .requests import GroundingRequest, GroundingResult
from .wire import entry_from_json, entry_from_object, in_input_order


def entry_from_line(line: bytes, number: int, base: Path | None) -> GroundingRequest | GroundingResult | None:
    """Line `number` (1-based) of a requests file: None when blank, else a request (relative paths
    read from `base`, default id the line number) or `{id, error}` naming the line. A UTF-8 BOM
    at the start of line 1 is skipped."""
    if number == 1 and line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8):]
    if not line.strip():
        return None
    return entry_from_json(line, f"line {number}", default_id=number, base=base)


def entry_from_record(record: dict[str, Any], number: int, base: Path | None) -> GroundingRequest | GroundingResult:
    """Row `number` (1-based) of a requests table (Parquet): the fields of a JSON request, a null
    field counting as absent; a request, or `{id, error}` naming the row."""
    obj = {key: value for key, value in record.items() if value is not None}
    return entry_from_object(obj, f"row {number}", default_id=number, base=base)


def ground_entries(engine, entries: Sequence[GroundingRequest | GroundingResult], top_k: int | None = None,
                   nms: float | None = None, progress: Callable[[int], None] | None = None) -> list[GroundingResult]:
    """Each entry's result in order: its requests grounded by `engine` (a GroundingEngine), its error
    results as they are. `top_k` and `nms`, when given, win over the requests' own."""
    requests = [e for e in entries if isinstance(e, GroundingRequest)]
    for request in requests:
        request.top_k = request.top_k if top_k is None else top_k
        request.nms = request.nms if nms is None else nms
    return in_input_order(entries, engine.ground(requests, progress=progress))
