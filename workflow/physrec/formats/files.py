"""Reading a file a user named, refused before it can hang the job or exhaust its memory.

One reader for every input physrec opens by path (motion files, models, inspection arrays):
a FIFO would block its reader for ever and a link to /dev/zero would read until memory runs
out, so only regular files are read, and a file larger than its limit is refused unread.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path


class UnsafeFileError(ValueError):
    """A file refused before or while it was read; the message starts with its path."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_regular_file(path: str | os.PathLike[str], max_bytes: float = math.inf,
                      limit_name: str = "the size limit") -> bytes:
    """The bytes of a regular file of at most `max_bytes`; `limit_name` is the key a user can change."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except FileNotFoundError:
        raise UnsafeFileError(p, "file not found") from None
    except OSError as e:
        raise UnsafeFileError(p, f"cannot read file ({e.strerror or e})") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(p, f"not a regular file ({file_kind(st.st_mode)}); only regular files are read")
        if st.st_size > max_bytes:
            raise UnsafeFileError(p, f"file of {st.st_size / 1e6:.1f} MB is larger than {limit_name} "
                                     f"({max_bytes / 1e6:g} MB)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read() if math.isinf(max_bytes) else f.read(int(max_bytes) + 1)
    except OSError as e:
        raise UnsafeFileError(p, f"cannot read file ({e.strerror or e})") from e
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise UnsafeFileError(p, f"file is larger than {limit_name} ({max_bytes / 1e6:g} MB)")
    return data


def file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a plain file")
