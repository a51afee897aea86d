"""Results of an offline run written as they arrive, in order, to a file that appears only when
complete: JSONL (the lines `seqpan ground` writes), or Parquet for a `.parquet` path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from ..io.atomic import write_atomically
from .sources import is_parquet

MAX_FAILURES_KEPT = 10
MOMENT_FIELDS = ("start", "end", "start_index", "end_index", "score")


def parquet_schema():
    """The Parquet columns of results: `id` as text (a number as its JSON text), the moment, `error`,
    and `moments` (top-k) as a list of structs."""
    import pyarrow as pa

    moment = [("start", pa.float64()), ("end", pa.float64()), ("start_index", pa.int64()),
              ("end_index", pa.int64()), ("score", pa.float64())]
    return pa.schema([("id", pa.string()), *moment, ("error", pa.string()),
                      ("moments", pa.list_(pa.struct(moment)))])


def parquet_row(result: dict) -> dict:
    """One result object (as `seqpan ground` writes it) as a row of `parquet_schema`."""
    rid = result.get("id")
    return {"id": rid if rid is None or isinstance(rid, str) else json.dumps(rid),
            **{k: result.get(k) for k in MOMENT_FIELDS}, "error": result.get("error"),
            "moments": result.get("moments")}


class ResultWriter:
    """Writes the tables of `GroundChunks` (`line`, `failed`) to `out`; counts the results and keeps
    the first failures (`{"id", "error"}`)."""

    def __init__(self, out: str | Path, progress: Callable[[int], None] | None = None):
        self.out, self.progress = Path(out), progress
        self.count, self.failed_count, self.failed = 0, 0, []

    def write(self, tables: Iterable) -> None:
        """Consume `tables`; the file appears at `out` only when all of them were written."""
        write_atomically(self.out, lambda tmp: self._write(tmp, tables))

    def _write(self, tmp: str, tables: Iterable) -> None:
        if is_parquet(self.out):
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = parquet_schema()
            with pq.ParquetWriter(tmp, schema) as writer:
                for lines in self._lines(tables):
                    rows = [parquet_row(json.loads(line)) for line in lines]
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for lines in self._lines(tables):
                    f.write("".join(line + "\n" for line in lines))

    def _lines(self, tables: Iterable):
        """The result lines of each table (blank input lines left out), counting as they pass."""
        for table in tables:
            rows = table.num_rows
            lines, failed = table.column("line").to_pylist(), table.column("failed").to_pylist()
            kept = [line for line in lines if line is not None]
            self.count += len(kept)
            for line, bad in zip(lines, failed):
                if bad:
                    self.failed_count += 1
                    if len(self.failed) < MAX_FAILURES_KEPT:
                        self.failed.append(json.loads(line))
            yield kept
            if self.progress:
                self.progress(rows)
