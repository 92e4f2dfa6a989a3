"""Zip archives (torch files, .pt2 programs, .npz arrays) opened only after their declared sizes
are checked, so a zip bomb is refused before anything is decompressed.

Python's zipfile never inflates a member past the size its directory declares, so checking the
declared sizes bounds what any later read can cost; torch's own reader trusts those sizes too,
which is why a torch archive is checked here before torch sees it.
"""

from __future__ import annotations

import io
import zipfile

MAX_MEMBERS = 10_000


class UnsafeZipError(ValueError):
    """A zip archive refused unread; the message names the archive (and the member)."""


def open_checked_zip(data: bytes, what: str, max_bytes: int, limit_name: str) -> zipfile.ZipFile:
    """`data` as a ZipFile whose members, decompressed, fit in `max_bytes` together."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UnsafeZipError(f"{what}: not a zip archive ({e})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsafeZipError(f"{what}: {len(infos)} members, more than {MAX_MEMBERS}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        if info.filename in seen:
            raise UnsafeZipError(f"{what}: member {info.filename!r} is stored twice")
        seen.add(info.filename)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsafeZipError(f"{what} [{info.filename}]: compression method {info.compress_type} is not read")
        if info.flag_bits & 0x1:
            raise UnsafeZipError(f"{what} [{info.filename}]: encrypted")
        total += info.file_size
        if total > max_bytes:
            raise UnsafeZipError(f"{what}: members decompress to more than {limit_name} ({max_bytes / 1e6:g} MB; "
                                 f"{info.filename!r} declares {info.file_size / 1e6:.1f} MB)")
    return zf
