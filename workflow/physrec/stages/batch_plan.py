"""The batch plan: which valid motion is recorded in which batch (written by the split checkpoint)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from physrec.formats.hashing import stable_hash
from physrec.stages.splitting import PlanError, plan_batches
from physrec.formats.tables import read_tsv_records, write_tsv

PLAN_COLUMNS = ["batch", "name", "path", "sha256", "duration"]


def make_plan(manifest_rows: list[dict[str, str]], batch_size: int) -> list[dict]:
    valid = {r["name"]: r for r in manifest_rows if r["valid"] == "true"}
    rows = []
    for batch, names in plan_batches(sorted(valid), batch_size).items():
        for name in names:
            r = valid[name]
            rows.append({"batch": batch, "name": name, "path": r["path"], "sha256": r["sha256"],
                         "duration": float(r["duration"])})
    return rows


def write_plan(path: str | Path, rows: list[dict]) -> None:
    write_tsv(path, rows, PLAN_COLUMNS)


def read_plan(path: str | Path) -> list[dict[str, str]]:
    return _plan(path)[0]


def _plan(path: str | Path) -> tuple[list[dict[str, str]], dict[str, list[dict[str, str]]]]:
    st = os.stat(path)
    return _read_plan_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_plan_cached(path: str, mtime_ns: int, size: int) -> tuple[list[dict[str, str]],
                                                                     dict[str, list[dict[str, str]]]]:
    """Snakemake asks for every batch's inputs while building the DAG: read each plan once,
    and group its rows by batch once (10,000 motions: a scan per question cost seconds)."""
    rows = read_tsv_records(path)
    by_batch: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_batch.setdefault(r["batch"], []).append(r)
    return rows, by_batch


def batch_ids(plan: str | Path) -> list[str]:
    return sorted(_plan(plan)[1])


def batch_rows(plan: str | Path, batch: str) -> list[dict[str, str]]:
    rows = _plan(plan)[1].get(batch)
    if not rows:
        raise PlanError(f"{plan}: no batch named '{batch}'")
    return rows


@lru_cache(maxsize=4096)
def _digest(path: str, mtime_ns: int, size: int, batch: str) -> str:
    return stable_hash([[r["name"], r["sha256"]] for r in _read_plan_cached(path, mtime_ns, size)[1][batch]])


def batch_digest(plan: str | Path, batch: str) -> str:
    """Identity of a batch's content: changes exactly when its members or their files change."""
    batch_rows(plan, batch)  # names a missing batch
    st = os.stat(plan)
    return _digest(os.path.abspath(plan), st.st_mtime_ns, st.st_size, batch)
