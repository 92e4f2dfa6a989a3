"""PARC "MS" motion files: read with validation, write byte-for-byte in PARC's layout.

A file is a pickled dict ``{motion_data, terrain_data, misc_data}`` whose values are ``None`` or
separately pickled dicts (PARC ``util/file_io.py``). Reading never runs code from the file
(see ``safe_pickle``) and rejects motions that would crash or mislead the simulator later, or
cost more than ``Limits`` allow: sizes are checked before the arrays are allocated.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from physrec.formats.atomic import atomic_output
from physrec.formats.files import UnsafeFileError, read_regular_file
from physrec.formats.safe_pickle import PickleLoadError, UnsafePickleError, parc_dump, parc_dumps, safe_loads
from physrec.formats.text import brief, describe
from physrec.motion.terrain import MIN_CELL_SIZE, Heightfield

LOOP_MODES = ("CLAMP", "WRAP")
# What no motion exceeds, whatever the limits: simulating beyond them is meaningless or breaks the
# simulator (a terrain cell at -1e30 m makes a box MuJoCo cannot place).
MAX_FPS = 10_000
MAX_COORDINATE = 1e4  # metres from the origin, for positions, heights and terrain corners
_MISC_DEPTH = 100  # nesting levels of misc_data that can be written again (pickling recurses)
_MOTION_ARRAYS = ("root_pos", "root_rot", "joint_rot", "body_contacts")
_QUAT_TOLERANCE = 1e-2
# Quaternions closer to unit length than float32 rounding are written bit-for-bit as they are,
# so writing a file we read gives back exactly what we read.
_QUAT_RENORMALISE_ABOVE = 1e-6


@dataclass(eq=False)
class MotionData:
    """One kinematic motion (PARC MSMotionData). Quaternions are (x, y, z, w), scalar last."""

    root_pos: np.ndarray  # [n, 3] float32
    root_rot: np.ndarray  # [n, 4] float32
    joint_rot: np.ndarray  # [n, num_joints, 4] float32
    body_contacts: np.ndarray  # [n, num_bodies] float32
    fps: int
    loop_mode: str = "CLAMP"

    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds as PARC's MotionLib computes it: (n - 1) / fps."""
        return (self.num_frames - 1) / self.fps


@dataclass(eq=False)
class MotionFile:
    """A motion with its terrain and PARC's free-form extras; ``warnings`` lists what was dropped.

    ``motion`` is None only in files that carry a terrain alone (a batch's terrain.pkl).
    """

    motion: MotionData | None
    terrain: Heightfield | None = None
    misc: dict | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """What one source file may hold (config `limits`, config/README.md). Each is checked before
    what it bounds is read or allocated; a file within all of them costs about 100 MB at most."""

    max_file_mb: float = 256.0
    max_frames: float = 100_000
    max_duration_s: float = 1000.0  # record.max_duration_s
    max_terrain_cells: float = 250_000
    max_misc_mb: float = 64.0
    max_collision_boxes: float = 20_000  # of the terrain a motion can reach (index checks it, not the reader)


# For files index accepted with the run's limits (their sha256 is checked before they are read again).
NO_LIMITS = Limits(*(math.inf,) * len(fields(Limits)))


class MotionFileError(ValueError):
    """A motion file is missing, unsafe or invalid; the message starts with its path."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_motion_file(path: str | os.PathLike[str], *, num_joints: int = 14, num_bodies: int = 15,
                     min_frames: int = 2, limits: Limits = Limits()) -> MotionFile:
    """Load and validate a PARC motion file (parse_motion_file of read_source)."""
    p = Path(path)
    return parse_motion_file(p, read_source(p, limits.max_file_mb * 1e6), num_joints=num_joints,
                             num_bodies=num_bodies, min_frames=min_frames, limits=limits)


def read_source(path: str | os.PathLike[str], max_bytes: float = math.inf) -> bytes:
    """The bytes of a regular file, refused unread when larger than `max_bytes` (see formats.files)."""
    try:
        return read_regular_file(path, max_bytes, "limits.max_file_mb")
    except UnsafeFileError as e:
        raise MotionFileError(e.path, e.problem) from None


def parse_motion_file(p: Path, data: bytes, *, num_joints: int = 14, num_bodies: int = 15, min_frames: int = 2,
                      limits: Limits = Limits()) -> MotionFile:
    """Validate the bytes of a PARC motion file read from `p`.

    Unsafe or corrupt ``motion_data``/``terrain_data`` are errors; an unloadable ``misc_data``
    (PARC sometimes stores torch objects there) only drops ``misc`` with a warning.
    """
    outer = _load_section(p, data, "")
    if not isinstance(outer, dict) or "motion_data" not in outer:
        raise MotionFileError(p, "not a PARC motion file (expected a pickled dict with key 'motion_data')")
    warnings = []
    unknown = sorted(brief(k) for k in outer if k not in ("motion_data", "terrain_data", "misc_data"))
    if unknown:
        warnings.append(f"{p}: ignored unknown top-level keys: {', '.join(unknown[:10])}")

    motion_dict = _load_inner(p, outer["motion_data"], "motion_data", required=True)
    motion = _parse_motion(p, motion_dict, num_joints, num_bodies, min_frames, limits)
    terrain_dict = _load_inner(p, outer.get("terrain_data"), "terrain_data", required=False)
    terrain = None if terrain_dict is None else _parse_terrain(p, terrain_dict, limits)
    misc = _load_misc(p, outer.get("misc_data"), warnings, limits.max_misc_mb * 1e6)
    return MotionFile(motion=motion, terrain=terrain, misc=misc, warnings=warnings)


def write_motion_file(path: str | os.PathLike[str], mf: MotionFile) -> None:
    """Write ``mf`` in PARC's exact layout, atomically and byte-deterministically.

    The motion and terrain are validated (quaternions normalised) first with the same checks as
    ``read_motion_file``, so we never write a file it would reject (apart from frame count: a
    single-frame motion can be written).
    """
    p = Path(path)
    motion_bytes = None
    if mf.motion is not None:
        joint_rot, body_contacts = mf.motion.joint_rot, mf.motion.body_contacts
        num_joints = np.shape(joint_rot)[1] if np.ndim(joint_rot) == 3 else 14
        num_bodies = np.shape(body_contacts)[1] if np.ndim(body_contacts) == 2 else 15
        motion = _parse_motion(p, _motion_fields(mf.motion), num_joints, num_bodies, 1, NO_LIMITS, normalise=True)
        motion_bytes = parc_dumps(_motion_fields(motion))
    terrain_bytes = None
    if mf.terrain is not None:
        t = mf.terrain
        terrain = _parse_terrain(p, {"hf": t.hf, "hf_maxmin": t.hf_maxmin, "min_point": t.min_point, "dx": t.dx},
                                 NO_LIMITS)
        hf_maxmin = terrain.hf_maxmin
        if hf_maxmin is None:  # PARC always stores it; its default bounds are hf + 1 / hf - 1
            hf_maxmin = np.stack([terrain.hf + 1.0, terrain.hf - 1.0], axis=-1).astype(np.float32)
        terrain_bytes = parc_dumps(
            {"hf": terrain.hf, "hf_maxmin": hf_maxmin, "min_point": terrain.min_point, "dx": terrain.dx}
        )
    outer = {
        "motion_data": motion_bytes,
        "terrain_data": terrain_bytes,
        "misc_data": None if mf.misc is None else parc_dumps(mf.misc),
    }
    with atomic_output(p) as tmp, open(tmp, "xb") as f:
        parc_dump(outer, f)


def _motion_fields(m: MotionData) -> dict[str, Any]:
    """MSMotionData's fields in PARC's order."""
    return {
        "root_pos": m.root_pos,
        "root_rot": m.root_rot,
        "joint_rot": m.joint_rot,
        "body_contacts": m.body_contacts,
        "fps": m.fps,
        "loop_mode": m.loop_mode,
    }


def _load_section(path: Path, data: bytes, section: str) -> Any:
    source = f"{path} [{section}]" if section else str(path)
    where = f"{section}: " if section else ""
    try:
        return safe_loads(data, source)
    except PickleLoadError as e:
        raise MotionFileError(path, where + e.detail) from e


def _load_inner(path: Path, value: Any, section: str, *, required: bool) -> dict | None:
    if value is None:
        if required:
            raise MotionFileError(path, f"{section} is missing")
        return None
    if not isinstance(value, (bytes, bytearray)):
        raise MotionFileError(path, f"{section} must be pickled bytes, got {type(value).__name__}")
    loaded = _load_section(path, bytes(value), section)
    if not isinstance(loaded, dict):
        raise MotionFileError(path, f"{section} must be a pickled dict, got {type(loaded).__name__}")
    return loaded


def _load_misc(path: Path, value: Any, warnings: list[str], max_bytes: float) -> dict | None:
    """misc_data is optional extras: failing to load it must not lose the motion. Its size is a
    limit, not a warning: a recorded motion carries the source's misc_data along."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)) and len(value) > max_bytes:
        raise MotionFileError(path, f"misc_data holds {len(value) / 1e6:.1f} MB, more than limits.max_misc_mb "
                                    f"({max_bytes / 1e6:g})")
    try:
        misc = _load_inner(path, value, "misc_data", required=False)
    except MotionFileError as e:
        reason = "unsafe content" if isinstance(e.__cause__, UnsafePickleError) else "unreadable"
        warnings.append(f"{path}: misc_data dropped ({reason}): {e.problem}")
        return None
    if _nested_deeper(misc, _MISC_DEPTH):
        warnings.append(f"{path}: misc_data dropped (nested deeper than {_MISC_DEPTH} levels, so it could not be "
                        "written into a recorded motion)")
        return None
    return misc


def _nested_deeper(value: Any, depth: int) -> bool:
    """Whether lists, tuples and dicts in `value` nest deeper than `depth` (walked without recursion)."""
    todo = [(value, 0)]
    while todo:
        v, level = todo.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            if level >= depth:
                return True
            todo.extend((x, level + 1) for x in v if isinstance(x, (list, tuple, dict)))
    return False


def _float_array(path: Path, section: str, name: str, value: Any, expected: tuple,
                 limit: tuple[float, str, str] | None = None) -> np.ndarray:
    """`value` as a contiguous float32 array of shape `expected` (ints, or None for any size).

    The shape is checked before anything is converted, from the array or (a nested list) from its
    first elements: a list can repeat one row by reference, so a small file can name a large array.
    `limit` (most, unit, key) bounds the product of the free (None) axes: frames, or terrain cells.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind == "c":
        raise MotionFileError(path, f"{section}.{name} is complex-valued ({value.dtype}); it must be real")
    claimed = _claimed_shape(value, len(expected) + 1)
    _check_shape(path, section, name, claimed, expected)
    count = math.prod(n for n, e in zip(claimed, expected) if e is None)
    if limit is not None and count > limit[0]:
        raise MotionFileError(path, f"{section}.{name} has {count} {limit[1]}, more than limits.{limit[2]} "
                                    f"({limit[0]:g})")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as non-finite below
            arr = np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. a ragged list, or text
        raise MotionFileError(path, f"{section}.{name} cannot be converted to float32 ({describe(e)})") from e
    _check_shape(path, section, name, arr.shape, expected)
    return arr


def _claimed_shape(value: Any, depth: int) -> tuple[int, ...]:
    """The shape numpy would give `value` (at most `depth` axes), found without converting it: a
    nested list's lengths along its first elements, then the shape of an array met there."""
    shape: list[int] = []
    while len(shape) < depth:
        if isinstance(value, np.ndarray):
            return tuple(shape) + value.shape + value.dtype.shape
        if not isinstance(value, (list, tuple)):
            break
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _check_shape(path: Path, section: str, name: str, shape: tuple, expected: tuple) -> None:
    """``expected`` holds ints or None (any size) per axis."""
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        spec = ", ".join("n" if e is None else str(e) for e in expected)
        raise MotionFileError(path, f"{section}.{name} has shape {tuple(shape)}, expected [{spec}]")


def _check_bounded(path: Path, where: str, arr: np.ndarray, unit: str) -> None:
    """Finite values within MAX_COORDINATE of the origin; the first bad one is named."""
    bad = ~(np.abs(arr) <= MAX_COORDINATE)  # NaN is bad too
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), arr.shape)
        at = f" at {unit} {idx[0]}" if arr.ndim == 2 and unit == "frame" else f" at {unit} {tuple(map(int, idx))}"
        raise MotionFileError(path, f"{where} is {float(arr[idx]):g}{at}; values must be finite and within "
                                    f"±{MAX_COORDINATE:g} m")


def _check_finite_frames(path: Path, name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
    if bad.any():
        raise MotionFileError(path, f"motion_data.{name} is not finite at frame {int(np.argmax(bad))}")


def _check_quats(path: Path, name: str, q: np.ndarray, normalise: bool) -> np.ndarray:
    """Refuse quaternions far from unit length; return q, renormalised if `normalise`."""
    norms = np.linalg.norm(q.astype(np.float64), axis=-1)
    off = np.abs(norms - 1.0)
    if (off > _QUAT_TOLERANCE).any():
        idx = np.unravel_index(int(np.argmax(off > _QUAT_TOLERANCE)), off.shape)
        where = f"frame {idx[0]}" + (f", joint {idx[1]}" if len(idx) > 1 else "")
        raise MotionFileError(
            path, f"motion_data.{name} is not a unit quaternion at {where} (norm {norms[idx]:.4g})"
        )
    fix = off > _QUAT_RENORMALISE_ABOVE
    if not normalise or not fix.any():
        return q
    out = q.copy()
    out[fix] = (q[fix].astype(np.float64) / norms[fix][:, None]).astype(np.float32)
    return out


def _is_real(value: Any) -> bool:
    """A finite int/float (numpy or Python, of any size), not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or isinstance(value, (float, np.floating)) and math.isfinite(value)


def _parse_fps(path: Path, value: Any) -> int:
    if _is_real(value) and 1 <= value <= MAX_FPS and float(value).is_integer():
        return int(value)
    raise MotionFileError(path, f"motion_data.fps must be an integer from 1 to {MAX_FPS}, got {brief(value)}")


def _parse_motion(path: Path, d: dict, num_joints: int, num_bodies: int, min_frames: int, limits: Limits,
                  normalise: bool = False) -> MotionData:
    """Checked motion data. Reading keeps the file's quaternions as they are, because PARC's
    MotionLib does not normalise them either and a trained policy's observation depends on
    that; writing normalises them."""
    missing = [k for k in (*_MOTION_ARRAYS, "fps") if k not in d]
    if missing:
        raise MotionFileError(path, f"motion_data is missing keys: {', '.join(missing)}")
    expected = {
        "root_pos": (None, 3),
        "root_rot": (None, 4),
        "joint_rot": (None, num_joints, 4),
        "body_contacts": (None, num_bodies),
    }
    frames = (limits.max_frames, "frames", "max_frames")
    arrays = {k: _float_array(path, "motion_data", k, d[k], expected[k], frames) for k in _MOTION_ARRAYS}
    counts = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise MotionFileError(path, f"motion_data arrays disagree on the number of frames ({listing})")
    n = counts["root_pos"]
    if n < min_frames:
        raise MotionFileError(path, f"too few frames: {n} < {min_frames}")
    for name, arr in arrays.items():
        _check_finite_frames(path, name, arr)
    _check_bounded(path, "motion_data.root_pos", arrays["root_pos"], "frame")
    loop_mode = d.get("loop_mode", "CLAMP")
    if not (isinstance(loop_mode, str) and loop_mode in LOOP_MODES):
        raise MotionFileError(path, f"motion_data.loop_mode must be CLAMP or WRAP, got {brief(loop_mode)}")
    fps = _parse_fps(path, d["fps"])
    if (n - 1) / fps > limits.max_duration_s:
        raise MotionFileError(path, f"motion lasts {(n - 1) / fps:g} s, more than record.max_duration_s "
                                    f"({limits.max_duration_s:g})")
    return MotionData(
        root_pos=arrays["root_pos"],
        root_rot=_check_quats(path, "root_rot", arrays["root_rot"], normalise),
        joint_rot=_check_quats(path, "joint_rot", arrays["joint_rot"], normalise),
        body_contacts=arrays["body_contacts"],
        fps=fps,
        loop_mode=str(loop_mode),
    )


def _parse_terrain(path: Path, d: dict, limits: Limits) -> Heightfield:
    missing = [k for k in ("hf", "min_point", "dx") if k not in d]
    if missing:
        raise MotionFileError(path, f"terrain_data is missing keys: {', '.join(missing)}")
    hf = _float_array(path, "terrain_data", "hf", d["hf"], (None, None),
                      (limits.max_terrain_cells, "cells", "max_terrain_cells"))
    if hf.size == 0:
        raise MotionFileError(path, f"terrain_data.hf of shape {hf.shape} must be non-empty")
    _check_bounded(path, "terrain_data.hf", hf, "cell")
    hf_maxmin = d.get("hf_maxmin")
    if hf_maxmin is not None:
        hf_maxmin = _float_array(path, "terrain_data", "hf_maxmin", hf_maxmin, (*hf.shape, 2))
        _check_bounded(path, "terrain_data.hf_maxmin", hf_maxmin, "cell")
    min_point = _float_array(path, "terrain_data", "min_point", d["min_point"], (2,))
    dx = d["dx"]
    if not (_is_real(dx) and MIN_CELL_SIZE <= dx <= MAX_COORDINATE):
        raise MotionFileError(path, f"terrain_data.dx must be a number from {MIN_CELL_SIZE:g} to "
                                    f"{MAX_COORDINATE:g} (metres), got {brief(dx)}")
    corners = np.stack([min_point, min_point + (np.array(hf.shape) - 1) * float(dx)])
    _check_bounded(path, "terrain_data.min_point (or the terrain's far corner)", corners, "corner")
    return Heightfield(hf=hf, min_point=min_point, dx=float(dx), hf_maxmin=hf_maxmin)
