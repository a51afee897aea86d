"""Atomic output: whole or nothing, never replacing a device, a pipe or a folder, following
symlinks, honouring the umask (issue #11, item 5)."""
from __future__ import annotations

import os
import secrets
import stat
import threading
from pathlib import Path

import pytest

from engine.io.atomic import OutputPathError, check_writable, write_atomically
from reference.errors import SeqPANError


def write_text(text: str):
    return lambda tmp: Path(tmp).write_text(text)


def test_writes_whole_file_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "new" / "deeper" / "out.txt"
    write_atomically(out, write_text("hello"))
    assert out.read_text() == "hello"

    def fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(out, fail)
    assert out.read_text() == "hello" and sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]


def test_issue11_5_character_device_is_written_not_replaced(tmp_path):
    """Issue #11 (5): `--out` at a character device turned it into a regular file (so `--out
    /dev/null` as root replaced /dev/null). A private null device is made for the test."""
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    write_atomically(device, write_text("results\n"))
    assert stat.S_ISCHR(os.stat(device).st_mode) and os.stat(device).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_issue11_5_pipe_receives_the_output_and_stays_a_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(Path(fifo).read_text()), daemon=True)
    reader.start()
    write_atomically(fifo, write_text("line 1\nline 2\n"))
    reader.join(30)
    assert received == ["line 1\nline 2\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_issue11_5_symlink_is_followed_not_replaced(tmp_path):
    """Issue #11 (5): a symlink was replaced by a regular file instead of writing its target."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "results.jsonl"
    target.write_text("old")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_atomically(link, write_text("new"))
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "real" / "created.jsonl")
    write_atomically(dangling, write_text("made"))
    assert dangling.is_symlink() and (tmp_path / "real" / "created.jsonl").read_text() == "made"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_issue11_5_new_files_honour_the_umask(tmp_path, umask):
    """Issue #11 (5): outputs were always mode 0600 whatever the umask."""
    old = os.umask(umask)
    try:
        write_atomically(tmp_path / "out.txt", write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == 0o666 & ~umask


def test_replaced_file_keeps_its_mode(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    out.chmod(0o640)
    write_atomically(out, write_text("new"))
    assert out.read_text() == "new" and stat.S_IMODE(os.stat(out).st_mode) == 0o640


def test_issue11_9_unwritable_places_are_one_line_errors(tmp_path):
    """Issue #11 (9): an output whose folder is a file, or a folder itself, gave a traceback."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for path in (tmp_path / "file" / "out.txt", tmp_path / "dir", loop, tmp_path / "file" / "a" / "b"):
        for attempt in (check_writable, lambda p: write_atomically(p, write_text("x"))):
            with pytest.raises(OutputPathError) as info:
                attempt(path)
            assert isinstance(info.value, SeqPANError) and "\n" not in str(info.value)
    assert (tmp_path / "file").read_text() == "x" and list((tmp_path / "dir").iterdir()) == []


def refusal(path, attempt) -> str:
    with pytest.raises(OutputPathError) as info:
        attempt(path)
    return str(info.value)


WRITERS = (check_writable, lambda p: write_atomically(p, write_text("x")))


def test_each_unwritable_place_says_why(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for attempt in WRITERS:
        assert refusal(tmp_path / "dir", attempt) == \
            f"cannot write {str(tmp_path / 'dir')!r}: it is a folder or another special file"
        assert refusal(loop, attempt) == f"cannot write {str(loop)!r}: Too many levels of symbolic links"
        assert refusal(tmp_path / "file" / "a" / "b", attempt) == \
            f"cannot write {str(tmp_path / 'file' / 'a' / 'b')!r}: Not a directory"


def test_a_folder_without_write_permission_is_refused_before_writing(tmp_path, monkeypatch):
    """As a user without write (or search) permission on the folder sees it (the tests may run as root,
    for whom os.access allows everything)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real(path, mode) and not mode & (os.W_OK | os.X_OK))
    for attempt in WRITERS:
        assert refusal(tmp_path / "new" / "out.txt", attempt) == \
            f"cannot write {str(tmp_path / 'new' / 'out.txt')!r}: folder {str(tmp_path)!r} is not writable"
    monkeypatch.setattr(os, "access", lambda path, mode: real(path, mode) and not mode & os.X_OK)
    assert refusal(tmp_path / "out.txt", check_writable).endswith("is not writable")
    assert list(tmp_path.iterdir()) == []


def test_writable_places_pass_the_early_check(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    for path in (tmp_path / "old.txt", tmp_path / "new.txt", tmp_path / "a" / "b" / "new.txt"):
        assert check_writable(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]  # checking writes nothing


def test_the_temporary_file_is_hidden_beside_the_target_and_a_taken_name_is_skipped(tmp_path, monkeypatch):
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".out.txt.aaaa.tmp").write_text("someone else's")
    seen = []

    def write(tmp):
        seen.append(tmp)
        Path(tmp).write_text("new")

    write_atomically(tmp_path / "out.txt", write)
    assert seen == [str(tmp_path / ".out.txt.bbbb.tmp")]
    assert (tmp_path / "out.txt").read_text() == "new"
    assert (tmp_path / ".out.txt.aaaa.tmp").read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.txt.aaaa.tmp", "out.txt"]


def test_no_free_temporary_name_after_100_tries_is_a_one_line_error(tmp_path, monkeypatch):
    tries = []
    monkeypatch.setattr(secrets, "token_hex", lambda n: tries.append(n) or "same")
    (tmp_path / ".out.txt.same.tmp").write_text("")
    assert refusal(tmp_path / "out.txt", WRITERS[1]) == \
        f"cannot write {str(tmp_path / 'out.txt')!r}: no free temporary name beside {tmp_path / 'out.txt'}"
    assert len(tries) == 100 and not (tmp_path / "out.txt").exists()


def test_a_device_gets_the_whole_output_once_written(tmp_path):
    """The output for a character device is written to a private file first, then copied: a write
    that fails leaves the device untouched (here a FIFO stands for it)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received, seen = [], []
    reader = threading.Thread(target=lambda: received.append(Path(fifo).read_bytes()), daemon=True)
    reader.start()

    def write(tmp):
        seen.append(tmp)
        Path(tmp).write_bytes(b"\x00all of it\n" * 10_000)

    write_atomically(fifo, write)
    reader.join(30)
    assert received == [b"\x00all of it\n" * 10_000]
    assert Path(seen[0]).name == "pipe" and Path(seen[0]).parent != tmp_path and not Path(seen[0]).parent.exists()


def test_a_failing_writer_that_removed_its_temporary_file_keeps_its_own_error(tmp_path):
    def fail(tmp):
        os.unlink(tmp)
        raise RuntimeError("gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        write_atomically(tmp_path / "out.txt", fail)
    assert list(tmp_path.iterdir()) == []
