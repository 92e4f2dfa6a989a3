"""Text from files and names as it may go into messages, tables and logs: one short line, never raising."""

from __future__ import annotations

import hashlib
import os
import reprlib
import unicodedata
from typing import Any

NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems
MAX_MESSAGE = 2000  # characters of one table cell or message; a path plus a problem fit easily
# Characters that end a line for some reader (csv: \n and \r; str.splitlines: also \v, \f, \x1c-\x1e,
# \x85, \u2028, \u2029), other control characters, and lone surrogates (a name that is not UTF-8).
_UNSAFE = ("Cc", "Zl", "Zp", "Cs")


def unsafe_characters(text: str) -> bool:
    """Whether `text` holds a control character, a line or paragraph separator or a lone surrogate."""
    return any(unicodedata.category(c) in _UNSAFE for c in text)


def path_problem(path: str) -> str:
    """Why the workflow cannot carry a path, or "": Snakemake reads ``{...}`` in an input or output
    path as a wildcard (and fills in ``{it}``), and manifests, plans and dataset YAMLs hold one
    path per line."""
    if "{" in path or "}" in path:
        return "holds '{' or '}', which Snakemake reads as a wildcard"
    if unsafe_characters(path):
        return "holds a tab, a line break or another control character, or is not UTF-8"
    return ""


def fitting_stem(stem: str, longest_suffix: str) -> str:
    """`stem`, or where `stem + longest_suffix` would not fit in a file name, its start and a hash of
    the whole (`<start>~<16 hex digits>`): PARC's motion names are file names of up to 255 bytes
    with `.pkl`, so a file physrec names after a motion (`<name>_rec.pkl`) may not fit otherwise."""
    if len(os.fsencode(stem + longest_suffix)) <= NAME_MAX:
        return stem
    tail = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:16]
    room = NAME_MAX - len(os.fsencode(tail + longest_suffix))
    return os.fsencode(stem)[:room].decode("utf-8", "ignore") + tail


def one_line(text: str, limit: int | None = MAX_MESSAGE) -> str:
    """`text` as one line of UTF-8: unsafe characters written as Python escapes (a tab as ``\\t``),
    cut to `limit` characters (None: not cut). A table or log built from such text cannot be split
    by what a file name or an error message holds."""
    if unsafe_characters(text):
        text = "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNSAFE else c
                       for c in text)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def brief(value: Any) -> str:
    """A short repr of any value for an error message: a huge array, list or string is elided, and
    a value whose repr fails (an integer of more than 4300 digits) is named by its type."""
    try:
        return one_line(reprlib.repr(value), 80)
    except Exception:
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"<{type(value).__name__}>"


def describe(e: BaseException) -> str:
    """``Type: message`` of an exception on one short line (the message alone can be megabytes:
    numpy quotes the text it could not convert)."""
    try:
        message = one_line(str(e), 300)
    except Exception:
        message = ""
    return f"{type(e).__name__}: {message}" if message else type(e).__name__
