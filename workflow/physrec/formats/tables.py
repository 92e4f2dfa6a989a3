"""TSV tables (manifests, plans, attempts) with fixed columns and byte-stable formatting.

Formatting rules, so equal data gives equal files: floats as the shortest text that reads back
to the same float (``repr``), bools as ``true``/``false``, None as an empty field, no quoting.
Text is written on one line (formats.text.one_line: a tab or line break in a file name or an
error message is written as an escape), so no content can make a table unwritable.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from physrec.formats.atomic import atomic_write_text
from physrec.formats.text import one_line


class TableError(ValueError):
    """A table that cannot be written or read back as written; the message names the file."""


def write_tsv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` (each with exactly ``columns`` as keys) as a tab-separated table, atomically."""
    if len(set(columns)) != len(columns):
        raise TableError(f"{path}: duplicate column names in {list(columns)}")
    for col in columns:
        _check_field(path, col, "column name")
    lines = ["\t".join(columns)]
    expected = set(columns)
    for i, row in enumerate(rows):
        keys = set(row)
        if keys != expected:
            missing, unknown = sorted(expected - keys), sorted(map(str, keys - expected))
            raise TableError(f"{path}: row {i} has missing columns {missing} and unknown columns {unknown}")
        lines.append("\t".join(_format(path, col, row[col]) for col in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_tsv(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a table written by ``write_tsv``; every cell is a string (callers
    convert). The csv module, not pandas: importing pandas cost each job about half a second."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = next(reader, None)
        if columns is None:
            raise TableError(f"{path}: empty table (no header line)")
        rows = []
        for i, cells in enumerate(reader):
            if len(cells) != len(columns):
                raise TableError(f"{path}: line {i + 2} has {len(cells)} fields; the header has {len(columns)}")
            rows.append(dict(zip(columns, cells)))
    return columns, rows


def read_tsv_records(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a ``write_tsv`` table as dicts of strings, in file order."""
    return read_tsv(path)[1]


def _format(path: str | os.PathLike[str], column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return one_line(value, None)
    raise TypeError(f"{path}: column {column!r}: cannot write a {type(value).__name__} to a TSV cell")


def _check_field(path: str | os.PathLike[str], column: str, text: str) -> str:
    if any(c in text for c in "\t\n\r"):
        raise TableError(f"{path}: column {column!r}: value {text!r} contains a tab or line break")
    return text
