"""Atomic file output: a file either appears whole or not at all, and never replaces a device, a
pipe or a folder."""
from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from reference.errors import SeqPANError


class OutputPathError(SeqPANError, OSError):
    """An output path that cannot be written: a folder, a socket, a read-only place, ..."""


def output_target(path: str | os.PathLike) -> tuple[Path, os.stat_result | None]:
    """Where writing `path` lands and what is there now (None: nothing). A regular file or a new
    one is the symlinks' final target; a character device (/dev/null) or a pipe (/dev/stdout on a
    pipe) is `path` itself. Raises OutputPathError for a folder or another special file."""
    try:
        st = os.stat(path)  # follows symlinks, /proc's fd links included
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise OutputPathError(f"cannot write {str(path)!r}: {err.strerror}") from None
    if st is None or stat.S_ISREG(st.st_mode):
        return Path(os.path.realpath(path)), st
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return Path(path), st
    raise OutputPathError(f"cannot write {str(path)!r}: it is a folder or another special file")


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before long work, when `path` cannot be written: a folder or special file is
    there, its folder is a file, or that folder is not writable (or read-only)."""
    target, st = output_target(path)
    if st is None or stat.S_ISREG(st.st_mode):
        _check_folder(path, target)


def _check_folder(path: str | os.PathLike, target: Path) -> None:
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {str(path)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable")


def write_atomically(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) and move the result into place, so `path` never holds half a file.

    A symlink is followed (its target is replaced, the link kept). A new file gets the mode the
    umask gives; a replaced one keeps its mode. A character device or a pipe is not replaced: the
    finished output is copied into it. Raises OutputPathError (one line) when it cannot be written.
    """
    target, st = output_target(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_stream(target, write)
        return
    _check_folder(path, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(target)
    except OSError as err:
        raise OutputPathError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    try:
        try:
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(target: Path) -> tuple[int, str]:
    """A new empty file beside `target`, created with mode 0666 so that the kernel applies the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # POSIX, as os.fchmod above
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def _write_stream(target: Path, write: Callable[[str], object]) -> None:
    """Write the whole output to a private temporary file, then copy it into a device or pipe."""
    with tempfile.TemporaryDirectory(prefix="seqpan-out-") as folder:
        tmp = os.path.join(folder, target.name)  # the same name: a writer may choose its format by it
        write(tmp)
        with open(tmp, "rb") as src, open(target, "ab") as dst:
            shutil.copyfileobj(src, dst)
