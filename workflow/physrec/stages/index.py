"""Index a dataset: read every motion once (safely), check it, one manifest row per motion.

A bad motion becomes a row with valid=false and a clear error; it never stops the run.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

from physrec.formats.dataset_yaml import motion_class, motion_name, read_dataset
from physrec.formats.hashing import sha256_file
from physrec.formats.motion_file import MotionFile, MotionFileError, read_motion_file
from physrec.formats.tables import read_tsv_records, write_tsv

MANIFEST_COLUMNS = ["name", "path", "sha256", "frames", "fps", "duration", "weight", "class",
                    "terrain_shape", "valid", "error", "warnings"]


def display_path(path: str | os.PathLike[str]) -> str:
    """A path relative to the working directory when it lies below it, else absolute.

    Keeps manifests and provenance the same wherever a project folder is moved.
    """
    p = os.path.abspath(path)
    rel = os.path.relpath(p)
    return p if rel.startswith(os.pardir) else rel


def _row(name: str, path: Path, weight: float, cls: str) -> dict:
    return {"name": name, "path": display_path(path), "sha256": None, "frames": None, "fps": None,
            "duration": None, "weight": weight, "class": cls, "terrain_shape": None, "valid": False,
            "error": None, "warnings": None}


def check_motion(path: Path, min_frames: int, num_joints: int, num_bodies: int,
                 max_duration: float = math.inf) -> MotionFile:
    mf = read_motion_file(path, num_joints=num_joints, num_bodies=num_bodies, min_frames=min_frames)
    if mf.terrain is None:
        raise MotionFileError(path, "no terrain_data (a motion needs its terrain to be simulated)")
    if mf.motion is not None and mf.motion.duration > max_duration:
        raise MotionFileError(path, f"{mf.motion.duration:g} s long, more than record.max_duration_s "
                                    f"({max_duration:g} s): the trajectory files' longest episode")
    return mf


def index_dataset(dataset: str | Path, *, min_frames: int = 2, num_joints: int = 14,
                  num_bodies: int = 15, max_duration: float = math.inf) -> list[dict]:
    entries = read_dataset(dataset)
    root = Path(os.path.abspath(dataset)).parent
    rows: list[dict] = []
    first_by_name: dict[str, str] = {}
    cell_size: dict[int, float] = {}
    for entry in entries:
        name = motion_name(entry.path)
        row = _row(name, entry.path, entry.weight, motion_class(entry.path, root))
        rows.append(row)
        if entry.path.is_file():
            row["sha256"] = sha256_file(entry.path)
        if name in first_by_name:
            row["error"] = f"{row['path']}: duplicate motion name '{name}' (first listed as {first_by_name[name]})"
            continue
        first_by_name[name] = row["path"]
        try:
            mf = check_motion(entry.path, min_frames, num_joints, num_bodies, max_duration)
        except MotionFileError as e:
            row["error"] = str(e)
            continue
        m = mf.motion
        row.update(frames=m.num_frames, fps=m.fps, duration=m.duration, valid=True,
                   terrain_shape="x".join(str(s) for s in mf.terrain.shape),  # type: ignore[union-attr]
                   warnings="; ".join(mf.warnings) or None)
        cell_size[id(row)] = float(mf.terrain.dx)  # type: ignore[union-attr]
    _reject_odd_cell_sizes(rows, cell_size)
    return rows


def _reject_odd_cell_sizes(rows: list[dict], cell_size: dict[int, float]) -> None:
    """Terrains of one batch are tiled into one grid, so a dataset shares one cell size (PARC: 0.4 m).

    The most common size wins (ties: the smaller); motions with another size are invalid.
    """
    if not cell_size:
        return
    counts = Counter(round(dx, 6) for dx in cell_size.values())
    common = min(counts, key=lambda dx: (-counts[dx], dx))
    for row in rows:
        dx = cell_size.get(id(row))
        if dx is not None and round(dx, 6) != common:
            row.update(valid=False, error=f"{row['path']}: terrain cell size dx {dx:g} differs from the dataset's "
                                          f"{common:g} (a batch's terrains are tiled into one grid)")


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    write_tsv(path, rows, MANIFEST_COLUMNS)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    return read_tsv_records(path)
