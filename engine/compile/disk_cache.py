"""A disk cache of compiled artifacts (TensorRT engines, OpenVINO compiled models) that never serves a
stale or corrupt entry: each entry is named by its key's digest and carries a sidecar with the full
key and the artifact's SHA-256. Optionally bounded in bytes: past the bound, the entries used least
recently (a hit marks its entry used) are removed."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..io.atomic import write_atomically


class CacheMiss(Exception):
    """Why a cache entry cannot be used: missing, stale or corrupt."""


class CacheKey:
    """Base of a frozen dataclass holding everything an artifact depends on; its digest names the entry."""

    def as_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as a sidecar reads back

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()


class EngineCache:
    """Serialized engines under `root`: `<digest>.engine` and a `<digest>.json` sidecar holding the full
    key and the engine's SHA-256. An entry whose sidecar disagrees is discarded, never used. With
    `max_bytes`, storing an entry removes the least recently used others until the engines fit."""

    def __init__(self, root: str | Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = max_bytes

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        stem = self.root / key.digest()
        return stem.with_suffix(".engine"), stem.with_suffix(".json")

    def load(self, key: CacheKey) -> bytes:
        """The cached engine for `key`; raises CacheMiss (after deleting a bad entry) otherwise."""
        engine_path, sidecar_path = self.paths(key)
        if not sidecar_path.is_file() or not engine_path.is_file():
            self.discard(key)  # half an entry (a crash between the two writes) is no entry
            raise CacheMiss("not cached")
        try:
            blob = engine_path.read_bytes()
            problem = _entry_problem(key, json.loads(sidecar_path.read_text()), blob)
        except (OSError, ValueError) as err:
            problem = f"corrupt: unreadable entry ({err})"
        if problem is None:
            os.utime(engine_path)  # used now: the last to be evicted
            return blob
        self.discard(key)
        raise CacheMiss(problem)

    def store(self, key: CacheKey, blob: bytes) -> Path:
        """Write the engine, then its sidecar (so a crash in between leaves a miss, not a bad hit)."""
        engine_path, sidecar_path = self.paths(key)
        write_atomically(engine_path, lambda tmp: Path(tmp).write_bytes(blob))
        sidecar = {"key": key.as_json(), "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        write_atomically(sidecar_path, lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=1)))
        if self.max_bytes is not None:
            self.evict(keep=engine_path)
        return engine_path

    def evict(self, keep: Path) -> None:
        """Remove the least recently used entries (never `keep`) until the engines take at most max_bytes."""
        entries = []
        for path in self.root.glob("*.engine"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                total -= size

    def discard(self, key: CacheKey) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)

    def get_or_build(self, key: CacheKey, build: Callable[[], bytes]) -> tuple[bytes, str]:
        """The cached engine, or a freshly built and stored one; with "cached" or why it was built."""
        try:
            return self.load(key), "cached"
        except CacheMiss as miss:
            blob = build()
            self.store(key, blob)
            return blob, f"built ({miss})"


def _entry_problem(key: CacheKey, sidecar, blob: bytes) -> str | None:
    """Why a cache entry (its parsed sidecar and engine bytes) must not serve `key`, or None."""
    if not isinstance(sidecar, dict):
        return "corrupt: the sidecar is not a JSON object"
    if sidecar.get("key") != key.as_json():
        return "stale: built for another key"
    if sidecar.get("sha256") != hashlib.sha256(blob).hexdigest():
        return "corrupt: engine bytes do not match their SHA-256"
    return None


def cache_root(kind: str) -> Path:
    """The folder for `kind`'s compiled artifacts: $SEQPAN_CACHE_DIR/<kind> when that is set, else the
    per-user $XDG_CACHE_HOME/seqpan/<kind> (~/.cache/seqpan/<kind>)."""
    if os.environ.get("SEQPAN_CACHE_DIR"):
        return Path(os.environ["SEQPAN_CACHE_DIR"]) / kind
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqpan" / kind
