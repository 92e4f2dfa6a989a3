"""Outputs that were deleted or changed after their job wrote them, found before a run.

Snakemake does not rerun a job only because a file it made has gone: it reruns a job whose
own outputs are missing or older than its inputs, and leaves alone an intermediate file
that later jobs already used. Files inside a directory output (the recorded motions) are
not tracked at all. So a deleted `rollouts.h5` or recorded motion would stay deleted while
the next dataset still named it. Before Snakemake builds its DAG, `untrusted_outputs`
lists the outputs made from such files, down to the iteration's merged manifest (a target
of the run: Snakemake reruns a job whose output is missing only when a later job needs
it); removing them (the Snakefile does) makes their jobs, and those that rebuild the
missing files, run again.

Cheap at 10,000 motions: one stat per file; a file is hashed only when its time stamp is
newer than the table that recorded its sha256 (touched or rewritten since).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from physrec.formats.hashing import sha256_file
from physrec.formats.tables import read_tsv_records
from physrec.stages.batch_plan import batch_ids

RECORD_OUTPUTS = ("rollouts.h5", "rollouts.json", "attempts.tsv", "terrain.pkl", "record_env.yaml", "record_args.txt")


@dataclass(frozen=True)
class Untrusted:
    output: str  # made from what is gone: removed, so that its job runs again
    why: str


def _changed(path: Path, sha256: str, table: Path) -> str | None:
    """Why `path`, recorded with `sha256` in `table`, cannot be trusted (None: it can)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} is missing"
    if st.st_mtime_ns > table.stat().st_mtime_ns and sha256_file(path) != sha256:
        return f"{path} changed since {table.name} recorded it"
    return None


def _unreadable(h5: Path, selected: Path) -> str | None:
    """Why a rollouts.h5 rewritten after select read it is no HDF5 file any more (None: it is,
    or it is older; opened only then, since opening every batch's file costs a DAG build)."""
    if h5.stat().st_mtime_ns <= selected.stat().st_mtime_ns:
        return None
    from physrec.formats.rollouts import TrajectoryError, open_rollouts
    try:
        open_rollouts(h5).close()
    except TrajectoryError:
        return f"{h5} is cut short or overwritten (not a readable HDF5 file)"
    return None


def _first_changed(table: Path, folder: Path, name_key: str, sha_key: str) -> str | None:
    """The first file `table` names in `folder` that cannot be trusted, and how many more."""
    reasons = [why for row in read_tsv_records(table) if row.get(name_key)
               for why in [_changed(folder / Path(row[name_key]).name, row[sha_key], table)] if why]
    if not reasons:
        return None
    return reasons[0] + (f" (and {len(reasons) - 1} more file(s))" if len(reasons) > 1 else "")


def untrusted_outputs(results_dir: str | Path, iteration: str) -> list[Untrusted]:
    """The outputs of one iteration that were made from files now missing or changed, each with
    a reason (an output may come with several)."""
    it = Path(results_dir) / iteration
    plan, merged = it / "batches" / "plan.tsv", it / "manifest.tsv"
    if not plan.is_file():
        return []  # split runs first, and everything after it
    found = []
    merge_is_newer = merged.is_file() and merged.stat().st_mtime_ns > plan.stat().st_mtime_ns
    for batch in batch_ids(plan):
        record, select = it / "record" / batch, it / "select" / batch
        selected = select / "selected.tsv"
        if not selected.is_file():
            if merge_is_newer:  # this batch was merged; its selection is gone
                found.append(Untrusted(str(merged), f"{selected} is missing"))
            continue
        missing = [n for n in RECORD_OUTPUTS if not (record / n).is_file()]
        if missing:
            why = f"{record / missing[0]} is missing"
        elif why := _unreadable(record / "rollouts.h5", selected):
            found.append(Untrusted(str(record / "rollouts.h5"), why))  # removed: its batch is recorded again
        else:
            why = _first_changed(selected, select / "motions", "recorded_file", "recorded_sha256")
        if why:
            found.append(Untrusted(str(selected), why))
            if merged.is_file():  # Snakemake reruns select only for a merge that is due
                found.append(Untrusted(str(merged), why))
    if merged.is_file():
        why = _first_changed(merged, it / "recorded_motions", "recorded_path", "recorded_sha256")
        if why:
            found.append(Untrusted(str(merged), why))
    return found
