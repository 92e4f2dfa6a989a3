"""Atomic file output, so that a killed job never leaves a half-written file a later run would trust."""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from physrec.formats.text import NAME_MAX


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name starts with ``.`` and ends with ``.tmp`` so leftovers of a killed job are
    hidden and never mistaken for output; the next write of the same file removes those whose
    writing process is gone (never a temporary file another live process is still writing,
    nor one of another machine's processes on a shared file system). The block must
    create the file; it is fsynced before the rename. On any exception the temporary file is
    removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    head = _temporary_head(target.name)
    for leftover in target.parent.glob(f"{glob.escape(head)}.*.tmp"):
        if _writer_is_gone(leftover.name[len(head):]):
            leftover.unlink(missing_ok=True)
    # Not created here (unlike mkstemp) so the block may open it in any mode with normal permissions.
    tmp = target.with_name(f"{head}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{target}: the atomic output block did not create {tmp.name}")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _writer_is_gone(tail: str) -> bool:
    """Whether the process named in a temporary file's ``.<pid>.<random>.tmp`` tail has ended on
    this machine (a name without a pid is not ours: it stays)."""
    pid = tail.split(".")[1] if tail.count(".") >= 3 else ""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _temporary_head(name: str) -> str:
    """``.<name>``, the start of the temporary names of `name`, cut so that with ``.<pid>.<random>.tmp``
    (at most 21 bytes: a pid has at most 7 digits) it fits in a file name: a target name near the
    255-byte limit must not make its temporary name too long."""
    return "." + os.fsdecode(os.fsencode(name)[:NAME_MAX - 1 - 21])


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (no newline translation, so bytes are stable)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; some filesystems cannot fsync a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
