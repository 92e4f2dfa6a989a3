"""Content hashes: file and config identities that decide whether earlier outputs can be reused."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so large files do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj: Any) -> str:
    """Hex SHA-256 of canonical JSON (sorted keys, no spaces): equal configs give equal hashes.

    Raises TypeError for values JSON cannot represent and ValueError for NaN/inf, rather than
    hashing an ambiguous spelling of them.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return sha256_bytes(text.encode("utf-8"))
