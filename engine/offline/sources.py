"""A requests file cut into chunks that workers read on their own: byte ranges of whole lines for
JSONL, row ranges of row groups for Parquet, each knowing the number of its first line (or row),
so every entry keeps the number the single-process command gives it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UsageError
from ..request_lines import entry_from_line, entry_from_record
from ..requests import GroundingRequest, GroundingResult

READ_BYTES = 1 << 22  # the driver scans a JSONL file for its line ends in pieces of this size


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".parquet"


def plan_chunks(path: str | Path, rows_per_chunk: int) -> list[dict]:
    """The chunks of a requests file (`.parquet`, else JSONL), in order, each at most `rows_per_chunk`
    lines or rows: {"path", "start", "stop", "first", "rows"} with byte offsets (JSONL) or a row
    group and row offsets in it (Parquet: also "group"), the number of its first line or row and
    how many it has. Raises UsageError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"requests file not found: {path}")
    return parquet_chunks(path, rows_per_chunk) if is_parquet(path) else jsonl_chunks(path, rows_per_chunk)


def jsonl_chunks(path: Path, lines_per_chunk: int) -> list[dict]:
    """Byte ranges of `lines_per_chunk` whole lines (the last one what is left)."""
    chunks, start, first, in_chunk, offset, last = [], 0, 1, 0, 0, b"\n"
    with open(path, "rb") as f:
        while piece := f.read(READ_BYTES):
            ends = np.flatnonzero(np.frombuffer(piece, np.uint8) == ord("\n")) + offset + 1
            for stop in ends[lines_per_chunk - in_chunk - 1::lines_per_chunk].tolist():
                chunks.append({"path": str(path), "start": start, "stop": stop, "first": first,
                               "rows": lines_per_chunk})
                start, first = stop, first + lines_per_chunk
            in_chunk = (in_chunk + len(ends)) % lines_per_chunk
            offset, last = offset + len(piece), piece[-1:]
    if start < offset:  # the lines after the last full chunk, the last one perhaps without its newline
        chunks.append({"path": str(path), "start": start, "stop": offset, "first": first,
                       "rows": in_chunk + (last != b"\n")})
    return chunks


def parquet_chunks(path: Path, rows_per_chunk: int) -> list[dict]:
    """Row ranges of at most `rows_per_chunk` rows within each row group."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as err:  # noqa: BLE001 - pyarrow's errors for a file that is not Parquet vary
        raise UsageError(f"requests file {path} is not a readable Parquet file: {err}") from None
    chunks, first = [], 1
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, rows_per_chunk):
            stop = min(rows, start + rows_per_chunk)
            chunks.append({"path": str(path), "group": group, "start": start, "stop": stop,
                           "first": first + start, "rows": stop - start})
        first += rows
    return chunks


class ChunkReader:
    """Reads chunks into entries (requests, or error results naming their line or row); keeps the
    last Parquet row group read, so that the chunks of one group read it once per worker."""

    def __init__(self):
        self._group: tuple[tuple[str, int], object] | None = None

    def entries(self, chunk: dict) -> Iterator[GroundingRequest | GroundingResult | None]:
        """Every line or row of the chunk in order: a request, an error result, or None for a blank line."""
        path = Path(chunk["path"])
        if is_parquet(path):
            rows = self._row_group(path, chunk["group"]).slice(chunk["start"], chunk["stop"] - chunk["start"])
            for number, record in enumerate(rows.to_pylist(), start=chunk["first"]):
                yield entry_from_record(record, number, path.parent)
            return
        with open(path, "rb") as f:
            f.seek(chunk["start"])
            data = f.read(chunk["stop"] - chunk["start"])
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:chunk["rows"]], start=chunk["first"]):
            yield entry_from_line(line, number, path.parent)

    def _row_group(self, path: Path, group: int):
        import pyarrow.parquet as pq

        key = (str(path), group)
        if self._group is None or self._group[0] != key:
            self._group = (key, pq.ParquetFile(path).read_row_group(group))
        return self._group[1]
