"""Outputs deleted or changed after their job wrote them, made again by Snakemake's own scheduling.

Snakemake does not rerun a job only because a file it made has gone: it reruns a job whose
own outputs are missing or older than its inputs, and leaves alone an intermediate file that
later jobs already used. Files inside a directory output (the recorded motions) are not
tracked at all. So a deleted `rollouts.h5` or recorded motion would stay deleted while the
next dataset still named it, and an edited one would be selected and merged.

Each job that makes such files (record, select, merge) therefore carries an *integrity
token* in a param. While its outputs are as it wrote them, the token is the one the job ran
with, which it wrote to `integrity.txt` beside its outputs: Snakemake's stored params match
and nothing reruns. When a file is missing or changed, the token becomes a new value derived
from the damage: the params differ, Snakemake schedules the job (and everything after it),
and a dry run, `--report` or `--unlock` shows that plan and deletes nothing.

How damage is found, cheaply enough for 10,000 motions (one stat per file): a record job
writes the sha256 of each of its outputs into its `integrity.txt`; select's `selected.tsv`
and merge's `manifest.tsv` hold the sha256 of each motion file they wrote. A file is hashed
only when its time stamp is newer than the table that holds its sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

from physrec.formats.atomic import atomic_write_text
from physrec.formats.hashing import sha256_file, stable_hash
from physrec.formats.tables import TableError, read_tsv_records

INTEGRITY_FILE = "integrity.txt"
RECORD_OUTPUTS = ("rollouts.h5", "rollouts.json", "attempts.tsv", "terrain.pkl", "record_env.yaml", "record_args.txt")
# Hashed into integrity.txt: all but record_args.txt, whose --threads differs between machines
# that record the same bytes (so integrity.txt, like the rest, is the same wherever it is made).
DIGESTED = RECORD_OUTPUTS[:-1]
_TOKEN = "token "


def write_integrity(folder: str | Path, token: str, digests: dict[str, str] | None = None) -> None:
    """The job's own record, written after its outputs: its token, and the sha256 of each output
    it names (sha256sum's layout, so `grep -v ^token integrity.txt | sha256sum -c` checks them)."""
    lines = [_TOKEN + token] + [f"{sha}  {name}" for name, sha in (digests or {}).items()]
    atomic_write_text(Path(folder) / INTEGRITY_FILE, "\n".join(lines) + "\n")


def output_digests(folder: str | Path, names: tuple[str, ...] = DIGESTED) -> dict[str, str]:
    return {name: sha256_file(Path(folder) / name) for name in names}


def _read_integrity(folder: Path) -> tuple[str, dict[str, str]] | None:
    try:
        lines = (folder / INTEGRITY_FILE).read_text().splitlines()
    except FileNotFoundError:
        return None
    token = lines[0].removeprefix(_TOKEN) if lines and lines[0].startswith(_TOKEN) else ""
    digests = {}
    for line in lines[1:]:
        sha, sep, name = line.partition("  ")
        if sep:
            digests[name] = sha
    return token, digests


def recorded_digest(record_dir: str | Path, name: str) -> str | None:
    """The sha256 the record job wrote for one of its outputs (None for a folder recorded before
    physrec wrote digests)."""
    found = _read_integrity(Path(record_dir))
    return found[1].get(name) if found else None


class DamagedRecordError(ValueError):
    """A record output that is not what its record job wrote; the next run records the batch again."""


def check_record_outputs(record_dir: str | Path, names: tuple[str, ...]) -> None:
    """Refuse record outputs whose sha256 is not what the record job wrote (a folder recorded
    before digests is not checked). A changed file's time stamp is set to now, so that the next
    DAG build hashes it too and schedules the batch's record job."""
    folder = Path(record_dir)
    found = _read_integrity(folder)
    if found is None:
        return
    for name in names:
        path, expected = folder / name, found[1].get(name)
        actual = sha256_file(path) if path.is_file() else None
        if actual != expected:
            raise damaged(path, f"changed since the record job wrote it (sha256 {str(actual)[:12]}, "
                                f"recorded {str(expected)[:12]})")


def damaged(path: Path, problem: str) -> DamagedRecordError:
    """The error for a damaged record output, marking it for the next DAG build (see check_record_outputs)."""
    if path.is_file():
        os.utime(path)
    return DamagedRecordError(f"{path}: {problem}; run the workflow again: it records batch "
                              f"{path.parent.name} again")


def _changed(path: Path, sha256: str, table: Path) -> str | None:
    """Why `path`, recorded with `sha256` in `table`, cannot be trusted (None: it can)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} is missing"
    if st.st_mtime_ns > table.stat().st_mtime_ns and sha256_file(path) != sha256:
        return f"{path} changed since {table.name} recorded it"
    return None


def _first_changed(table: Path, folder: Path, name_key: str, sha_key: str) -> str | None:
    """The first file `table` names in `folder` that cannot be trusted, and how many more."""
    try:
        rows = read_tsv_records(table)
    except (TableError, OSError) as e:
        return f"{table} is unreadable ({e})"
    return _first([_changed(folder / Path(row[name_key]).name, row[sha_key], table) for row in rows
                   if row.get(name_key)])


def _first(reasons: list[str | None]) -> str | None:
    """The first reason, and how many more files have one (None: none has)."""
    found = [r for r in reasons if r]
    return found[0] + (f" (and {len(found) - 1} more file(s))" if len(found) > 1 else "") if found else None


def record_damage(record_dir: str | Path) -> str | None:
    """Why a batch's record outputs cannot be trusted (None: they can, or nothing was recorded)."""
    folder = Path(record_dir)
    found = _read_integrity(folder)
    if found is None:  # not recorded yet, or by a physrec that wrote no digests
        present = [n for n in RECORD_OUTPUTS if (folder / n).is_file()]
        missing = [n for n in RECORD_OUTPUTS if n not in present]
        return f"{folder / missing[0]} is missing" if present and missing else None
    digests = found[1]
    return _first([_changed(folder / name, digests[name], folder / INTEGRITY_FILE) if name in digests
                   else None if (folder / name).is_file() else f"{folder / name} is missing"
                   for name in RECORD_OUTPUTS])


def select_damage(select_dir: str | Path) -> str | None:
    """Why a batch's selection cannot be trusted: its selected.tsv or a motion it wrote is gone or changed."""
    folder = Path(select_dir)
    selected = folder / "selected.tsv"
    if not selected.is_file():
        return f"{selected} is missing" if (folder / INTEGRITY_FILE).is_file() else None
    return _first_changed(selected, folder / "motions", "recorded_file", "recorded_sha256")


def merge_damage(iteration_dir: str | Path, select_dirs: list[str]) -> str | None:
    """Why an iteration's merged outputs cannot be trusted: a batch's selection is gone, or a
    recorded motion the merged manifest names is gone or changed."""
    folder = Path(iteration_dir)
    manifest = folder / "manifest.tsv"
    if not manifest.is_file():
        return None
    gone = _first([f"{d}/selected.tsv is missing" for d in select_dirs if not os.path.isfile(f"{d}/selected.tsv")])
    return gone or _first_changed(manifest, folder / "recorded_motions", "recorded_path", "recorded_sha256")


def job_token(folder: str | Path, damage: str | None) -> str:
    """The integrity token for the job whose outputs are in `folder`: the one it ran with while
    they are intact, a new one derived from the damage otherwise (see the module doc)."""
    folder = Path(folder)
    if damage is None:
        found = _read_integrity(folder)
        return found[0] if found else ""
    try:  # the same damage after a repair gives another token: the repair rewrote integrity.txt
        seen = (folder / INTEGRITY_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        seen = 0
    return "redo-" + stable_hash([damage, seen])[:16]
