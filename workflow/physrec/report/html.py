"""Small self-contained HTML pages for the Snakemake report, which shows HTML results inline."""

from __future__ import annotations

from html import escape
from pathlib import Path

from physrec.formats.atomic import atomic_write_text

STYLE = "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:2px 8px}"


def table(head: list[str], rows: list[list[object]]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def write_page(out: Path, parts: list[str]) -> Path:
    """A page of already-escaped parts, written atomically."""
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out
