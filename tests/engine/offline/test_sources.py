"""The chunks of a requests file: together they hold every line (or row) once, in order, each
knowing its number, whatever the file's end and the driver's read size."""
from __future__ import annotations

import json

import pytest

from engine.offline import sources
from engine.requests import GroundingRequest, GroundingResult


def lines_of(path, chunks):
    reader = sources.ChunkReader()
    return [(entry.id if entry is not None else None) for chunk in chunks for entry in reader.entries(chunk)]


@pytest.mark.parametrize("ending", [b"\n", b"", b"\n\n"])
@pytest.mark.parametrize("per_chunk", [1, 3, 7, 50])
def test_jsonl_chunks_number_every_line_once(tmp_path, monkeypatch, ending, per_chunk):
    monkeypatch.setattr(sources, "READ_BYTES", 16)  # line ends found across many reads
    body = [json.dumps({"features": "a.npy", "query": f"q {i}", "duration": 1}).encode() for i in range(20)]
    body[4] = b""  # a blank line keeps its number
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(body) + ending)
    chunks = sources.plan_chunks(path, per_chunk)
    expected = [None if i == 4 else i + 1 for i in range(20)] + [None] * (ending == b"\n\n")
    assert lines_of(path, chunks) == expected  # default ids: line numbers
    assert all(c["rows"] <= per_chunk for c in chunks) and sum(c["rows"] for c in chunks) == len(expected)


def test_parquet_chunks_number_rows_across_row_groups(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"features": "a.npy", "query": f"q {i}", "duration": None if i == 5 else 1.0} for i in range(11)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=4)
    chunks = sources.plan_chunks(tmp_path / "in.parquet", 3)
    entries = [e for chunk in chunks for e in sources.ChunkReader().entries(chunk)]
    assert [c["rows"] for c in chunks] == [3, 1, 3, 1, 3]
    assert [e.id for e in entries] == [i + 1 if i != 5 else None for i in range(11)]
    assert isinstance(entries[5], GroundingResult) and entries[5].error == "row 6: missing duration"
    assert isinstance(entries[0], GroundingRequest) and entries[0].features == tmp_path / "a.npy"


def test_an_empty_file_has_no_chunks(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b"")
    assert sources.plan_chunks(tmp_path / "in.jsonl", 4) == []
