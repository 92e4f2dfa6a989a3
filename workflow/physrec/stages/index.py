"""Index a dataset: read every motion once (safely), check it, one manifest row per motion.

A bad motion becomes a row with valid=false and a one-line error; it never stops the run. Every
failure of one motion, of whatever exception type, is caught in one place (index_dataset's loop),
and index checks everything a later stage relies on, so a motion it accepts cannot stop one either.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from physrec.formats.dataset_yaml import motion_class, motion_name, read_dataset
from physrec.formats.hashing import sha256_bytes
from physrec.formats.motion_file import (NO_LIMITS, Limits, MotionFile, MotionFileError, parse_motion_file,
                                         read_source)
from physrec.formats.tables import read_tsv_records, write_tsv
from physrec.formats.text import describe, one_line, path_problem
from physrec.motion.terrain import boxes_over, cell_size_key

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


def check_motion(path: Path, data: bytes, *, min_frames: int = 2, num_joints: int = 14, num_bodies: int = 15,
                 control_hz: int | None = None, limits: Limits = NO_LIMITS) -> MotionFile:
    """The checked motion of a source file's bytes: what `record` needs to simulate it."""
    mf = parse_motion_file(path, data, num_joints=num_joints, num_bodies=num_bodies, min_frames=min_frames,
                           limits=limits)
    if mf.terrain is None:
        raise MotionFileError(path, "no terrain_data (a motion needs its terrain to be simulated)")
    duration = mf.motion.duration  # type: ignore[union-attr]
    if control_hz is not None and duration < 1 / control_hz - 1e-9:
        raise MotionFileError(path, f"motion lasts {duration:g} s, less than one control step (1/{control_hz} s): "
                                    "its recording would last longer than itself")
    return mf


def read_indexed(path: str | os.PathLike[str], sha256: str, *, num_joints: int = 14,
                 num_bodies: int = 15) -> MotionFile:
    """A source that index accepted, read again by a later stage. It must still hold the indexed
    bytes, so everything index checked (the run's limits included) holds for it."""
    p = Path(path)
    data = read_source(p)
    if sha256_bytes(data) != sha256:
        raise MotionFileError(p, f"changed since it was indexed (sha256 {sha256_bytes(data)[:12]}, indexed "
                                 f"{sha256[:12]})")
    return check_motion(p, data, num_joints=num_joints, num_bodies=num_bodies)


def index_dataset(dataset: str | Path, *, min_frames: int = 2, num_joints: int = 14, num_bodies: int = 15,
                  control_hz: int = 30, limits: Limits = Limits(), terrain_margin: float = 3.0) -> list[dict]:
    """One manifest row per dataset entry. `terrain_margin`: record.terrain_margin_m, which
    decides the terrain a motion's character can reach and so its collision boxes."""
    entries = read_dataset(dataset)
    root = Path(os.path.abspath(dataset)).parent
    rows: list[dict] = []
    first_by_name: dict[str, str] = {}
    cell_size: dict[int, float] = {}
    for entry in entries:
        row = _row(motion_name(entry.path), entry.path, entry.weight, motion_class(entry.path, root))
        rows.append(row)
        try:
            cell_size[id(row)] = _index_motion(row, entry.path, first_by_name, terrain_margin, min_frames=min_frames,
                                               num_joints=num_joints, num_bodies=num_bodies, control_hz=control_hz,
                                               limits=limits)
        except MotionFileError as e:
            row["error"] = str(e)
        except Exception as e:  # whatever one file makes the reader raise (MemoryError too), it stays its row's
            row["error"] = f"{row['path']}: cannot be read ({describe(e)})"
    _reject_odd_cell_sizes(rows, cell_size)
    for row in rows:  # one line each, as the manifest, the logs and summary.md show them
        row.update(name=one_line(row["name"], None), path=one_line(row["path"], None),
                   **{k: row[k] and one_line(row[k]) for k in ("error", "warnings")})
    return rows


def _index_motion(row: dict, path: Path, first_by_name: dict[str, str], terrain_margin: float, **rules) -> float:
    """Fill in the row of the motion at `path`; its terrain's cell size. Raises if it is invalid."""
    name = row["name"]
    if path_problem(row["path"]):
        raise MotionFileError(row["path"], f"its path {path_problem(row['path'])}; rename the file")
    if name in first_by_name:
        raise MotionFileError(row["path"], f"duplicate motion name '{name}' (first listed as {first_by_name[name]})")
    first_by_name[name] = row["path"]
    data = read_source(path, rules["limits"].max_file_mb * 1e6)
    row["sha256"] = sha256_bytes(data)
    mf = check_motion(path, data, **rules)
    m, t = mf.motion, mf.terrain
    boxes = boxes_over(t, m.root_pos[:, :2], terrain_margin, rules["limits"].max_collision_boxes)  # type: ignore[union-attr]
    if boxes:
        raise MotionFileError(path, f"the terrain its character can reach makes {boxes} collision boxes, more than "
                                    f"limits.max_collision_boxes ({rules['limits'].max_collision_boxes:g}): each "
                                    "costs simulation time at every physics step")
    row.update(frames=m.num_frames, fps=m.fps, duration=m.duration, valid=True,  # type: ignore[union-attr]
               terrain_shape="x".join(str(s) for s in t.shape), warnings="; ".join(mf.warnings) or None)  # type: ignore[union-attr]
    return t.dx  # type: ignore[union-attr]


def _reject_odd_cell_sizes(rows: list[dict], cell_size: dict[int, float]) -> None:
    """Terrains of one batch are tiled into one grid, so a dataset shares one cell size (PARC: 0.4 m),
    compared as motion.terrain.cell_size_key does for the tiling. The most common size wins (ties:
    the smaller); motions with another size are invalid."""
    if not cell_size:
        return
    counts = Counter(cell_size_key(dx) for dx in cell_size.values())
    common = min(counts, key=lambda dx: (-counts[dx], dx))
    for row in rows:
        dx = cell_size.get(id(row))
        if dx is not None and cell_size_key(dx) != common:
            row.update(valid=False, error=f"{row['path']}: terrain cell size dx {np.float32(dx)!s} differs from the "
                                          f"dataset's {np.float32(common)!s} (a batch's terrains are tiled into one grid)")


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    write_tsv(path, rows, MANIFEST_COLUMNS)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    return read_tsv_records(path)
