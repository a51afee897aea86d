"""engine/compile/disk_cache.py on its own: entry names from the key's digest, what a sidecar holds,
stale, corrupt and half-written entries, the least-recently-used bound, and where the cache lives."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass

import pytest

from engine.compile.disk_cache import CacheKey, CacheMiss, EngineCache, cache_root


@dataclass(frozen=True)
class Key(CacheKey):
    name: str
    shape: tuple[int, ...]
    dtype: str = "f32"


KEY = Key("stage", (2, 6))


def test_digest_is_the_sha256_of_the_sorted_json_key():
    text = '{"dtype": "f32", "name": "stage", "shape": [2, 6]}'  # written by hand: sorted keys, tuple as list
    assert KEY.as_json() == {"name": "stage", "shape": [2, 6], "dtype": "f32"}
    assert KEY.digest() == hashlib.sha256(text.encode()).hexdigest()
    assert Key("stage", (2, 6)).digest() == KEY.digest()
    others = [Key("stagE", (2, 6)), Key("stage", (6, 2)), Key("stage", (2, 6, 1)), Key("stage", (2, 6), "bf16")]
    assert len({KEY.digest(), *(k.digest() for k in others)}) == 5


def test_entry_files_are_named_by_the_digest(tmp_path):
    cache = EngineCache(tmp_path / "c")
    assert (cache.root, cache.max_bytes) == (tmp_path / "c", None)
    assert cache.paths(KEY) == (tmp_path / "c" / f"{KEY.digest()}.engine", tmp_path / "c" / f"{KEY.digest()}.json")
    assert cache.store(KEY, b"blob") == tmp_path / "c" / f"{KEY.digest()}.engine"  # the folder is made
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [f"{KEY.digest()}.engine", f"{KEY.digest()}.json"]


def test_store_writes_the_blob_and_a_sidecar_with_the_key_and_its_sha256(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"\x00engine\xff")
    engine, sidecar = cache.paths(KEY)
    assert engine.read_bytes() == b"\x00engine\xff"
    assert json.loads(sidecar.read_text()) == {
        "key": {"name": "stage", "shape": [2, 6], "dtype": "f32"},
        "sha256": hashlib.sha256(b"\x00engine\xff").hexdigest(), "bytes": 8}
    assert cache.load(KEY) == b"\x00engine\xff"


@pytest.mark.parametrize("missing", [0, 1])
def test_half_an_entry_is_no_entry_and_is_removed(tmp_path, missing):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"blob")
    cache.paths(KEY)[missing].unlink()
    with pytest.raises(CacheMiss, match="^not cached$"):
        cache.load(KEY)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_entry_is_a_miss(tmp_path):
    with pytest.raises(CacheMiss, match="^not cached$"):
        EngineCache(tmp_path / "none").load(KEY)


@pytest.mark.parametrize("sidecar, reason", [
    ('"just text"', "corrupt: the sidecar is not a JSON object"),
    ('{"key": {"name": "stage", "shape": [2, 6], "dtype": "bf16"}, "sha256": "SHA"}', "stale: built for another key"),
    ('{"sha256": "SHA"}', "stale: built for another key"),
    ('{"key": {"name": "stage", "shape": [2, 6], "dtype": "f32"}, "sha256": "0SHA"}',
     "corrupt: engine bytes do not match their SHA-256"),
    ('{"key": {"name": "stage", "shape": [2, 6], "dtype": "f32"}}', "corrupt: engine bytes do not match their SHA-256"),
    ('{"key": {"name": "stage", "shape": [2, 6], "dtype": "f32"}, "sha256": "SHA"', "corrupt: unreadable entry ("),
    ('\udcff', "corrupt: unreadable entry ("),
])
def test_a_bad_sidecar_is_a_miss_with_its_reason_and_the_entry_is_removed(tmp_path, sidecar, reason):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"blob")
    engine, path = cache.paths(KEY)
    path.write_bytes(sidecar.replace("SHA", hashlib.sha256(b"blob").hexdigest()).encode("utf-8", "surrogateescape"))
    with pytest.raises(CacheMiss) as info:
        cache.load(KEY)
    assert str(info.value).startswith(reason), str(info.value)
    assert not engine.exists() and not path.exists()


def test_a_good_sidecar_written_by_hand_serves_its_entry(tmp_path):
    cache = EngineCache(tmp_path)
    engine, sidecar = cache.paths(KEY)
    engine.write_bytes(b"blob")
    sidecar.write_text(json.dumps({"key": {"dtype": "f32", "shape": [2, 6], "name": "stage"},
                                   "sha256": hashlib.sha256(b"blob").hexdigest()}))
    assert cache.load(KEY) == b"blob"


def test_an_engine_changed_on_disk_is_a_miss(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"blob")
    cache.paths(KEY)[0].write_bytes(b"blo")
    with pytest.raises(CacheMiss, match="^corrupt: engine bytes do not match their SHA-256$"):
        cache.load(KEY)


def test_get_or_build_builds_once_and_says_why(tmp_path):
    cache, built = EngineCache(tmp_path), []
    build = lambda: built.append(1) or b"new"  # noqa: E731
    assert cache.get_or_build(KEY, build) == (b"new", "built (not cached)")
    assert cache.get_or_build(KEY, build) == (b"new", "cached")
    cache.paths(KEY)[0].write_bytes(b"bad")
    assert cache.get_or_build(KEY, build) == (b"new", "built (corrupt: engine bytes do not match their SHA-256)")
    assert len(built) == 2 and cache.load(KEY) == b"new"


def test_discard_removes_both_files_and_is_quiet_when_they_are_gone(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"blob")
    cache.store(Key("other", (1,)), b"blob")
    cache.discard(KEY)
    cache.discard(KEY)
    assert sorted(p.stem for p in tmp_path.iterdir()) == [Key("other", (1,)).digest()] * 2


def set_used(cache: EngineCache, key: CacheKey, when_ns: int) -> None:
    os.utime(cache.paths(key)[0], ns=(when_ns, when_ns))


def entries(cache: EngineCache) -> list[str]:
    """The names of the keys (Key.name) whose engine and sidecar are both there."""
    names = []
    for engine in cache.root.glob("*.engine"):
        if engine.with_suffix(".json").is_file():
            names.append(json.loads(engine.with_suffix(".json").read_text())["key"]["name"])
    assert len(names) == len(list(cache.root.iterdir())) / 2  # no half entries left
    return sorted(names)


def test_a_hit_marks_its_entry_used(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"blob")
    set_used(cache, KEY, 10**9)
    cache.load(KEY)
    assert os.stat(cache.paths(KEY)[0]).st_mtime_ns > 10**18


def test_the_bound_removes_the_least_recently_used_entries_first(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=30)
    keys = [Key(name, (1,)) for name in "abcd"]
    for i, key in enumerate(keys[:3]):
        cache.store(key, b"x" * 10)
        set_used(cache, key, 10**18 + i * 10**15)  # in 2001: a oldest, then b, then c
    assert entries(cache) == ["a", "b", "c"]  # 30 bytes: exactly the bound
    cache.load(keys[0])  # a used now: b is the oldest
    cache.store(keys[3], b"x" * 10)
    assert entries(cache) == ["a", "c", "d"]
    cache.store(Key("big", (1,)), b"x" * 25)  # 25 + 30: all three others go
    assert entries(cache) == ["big"]


def test_the_entry_just_stored_stays_even_when_alone_it_passes_the_bound(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=10)
    cache.store(KEY, b"x" * 5)
    set_used(cache, KEY, 4 * 10**18)  # used "later" than the new one
    cache.store(Key("huge", (1,)), b"x" * 50)
    assert entries(cache) == ["huge"]


def test_without_a_bound_nothing_is_removed(tmp_path):
    cache = EngineCache(tmp_path)
    for name in "abc":
        cache.store(Key(name, (1,)), b"x" * 1000)
    assert entries(cache) == ["a", "b", "c"]


def two_entries(tmp_path, monkeypatch, listed: list[str]) -> EngineCache:
    """A cache of entries a (older) and b, 10 bytes each, bounded at 15 bytes from now on, whose
    folder listing gives `listed` ("a", "b", or another name for a file that is not there)."""
    cache = EngineCache(tmp_path)
    for i, name in enumerate("ab"):
        cache.store(Key(name, (1,)), b"x" * 10)
        set_used(cache, Key(name, (1,)), 10**18 + i * 10**15)
    cache.max_bytes = 15
    paths = {name: cache.paths(Key(name, (1,)))[0] for name in "ab"}
    monkeypatch.setattr(pathlib.Path, "glob",
                        lambda self, pattern: [paths.get(n, self / f"{n}.engine") for n in listed])
    return cache


def test_an_entry_removed_by_another_process_before_evicting_is_skipped(tmp_path, monkeypatch):
    cache = two_entries(tmp_path, monkeypatch, ["vanished", "a", "b"])
    cache.evict(keep=cache.paths(Key("b", (1,)))[0])
    monkeypatch.undo()
    assert entries(cache) == ["b"]


def test_an_entry_removed_by_another_process_while_evicting_is_no_error(tmp_path, monkeypatch):
    cache = two_entries(tmp_path, monkeypatch, ["a", "a", "b"])  # a counted twice: removed, then gone
    cache.evict(keep=cache.paths(Key("b", (1,)))[0])
    monkeypatch.undo()
    assert entries(cache) == ["b"]


def test_an_engine_without_its_sidecar_is_evicted_like_any_other(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=15)
    cache.store(Key("a", (1,)), b"x" * 10)
    set_used(cache, Key("a", (1,)), 10**18)
    cache.paths(Key("a", (1,)))[1].unlink()
    cache.store(Key("b", (1,)), b"x" * 10)
    assert entries(cache) == ["b"]


def test_cache_root_is_seqpan_cache_dir_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQPAN_CACHE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_root("openvino") == tmp_path / "s" / "openvino"
    monkeypatch.setenv("SEQPAN_CACHE_DIR", "")  # empty: not set
    assert cache_root("openvino") == tmp_path / "x" / "seqpan" / "openvino"
    monkeypatch.delenv("SEQPAN_CACHE_DIR")
    assert cache_root("trt") == tmp_path / "x" / "seqpan" / "trt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root("trt") == tmp_path / "h" / ".cache" / "seqpan" / "trt"
