"""PARC "MS" motion files: read with validation, write byte-for-byte in PARC's layout.

A file is a pickled dict ``{motion_data, terrain_data, misc_data}`` whose values are ``None`` or
separately pickled dicts (PARC ``util/file_io.py``). Reading never runs code from the file
(see ``safe_pickle``) and rejects motions that would crash or mislead the simulator later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physrec.formats.atomic import atomic_write_bytes
from physrec.formats.safe_pickle import PickleLoadError, UnsafePickleError, parc_dumps, safe_loads
from physrec.motion.terrain import Heightfield

LOOP_MODES = ("CLAMP", "WRAP")
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


class MotionFileError(ValueError):
    """A motion file is missing, unsafe or invalid; the message starts with its path."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_motion_file(
    path: str | os.PathLike[str], *, num_joints: int = 14, num_bodies: int = 15, min_frames: int = 2
) -> MotionFile:
    """Load and validate a PARC motion file.

    Unsafe or corrupt ``motion_data``/``terrain_data`` are errors; an unloadable ``misc_data``
    (PARC sometimes stores torch objects there) only drops ``misc`` with a warning.
    """
    p = Path(path)
    if not p.exists():
        raise MotionFileError(p, "file not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise MotionFileError(p, f"cannot read file ({e.strerror or e})") from e

    outer = _load_section(p, data, "")
    if not isinstance(outer, dict) or "motion_data" not in outer:
        raise MotionFileError(p, "not a PARC motion file (expected a pickled dict with key 'motion_data')")
    warnings = []
    unknown = sorted(str(k) for k in outer if k not in ("motion_data", "terrain_data", "misc_data"))
    if unknown:
        warnings.append(f"{p}: ignored unknown top-level keys: {', '.join(unknown)}")

    motion_dict = _load_inner(p, outer["motion_data"], "motion_data", required=True)
    motion = _parse_motion(p, motion_dict, num_joints, num_bodies, min_frames)
    terrain_dict = _load_inner(p, outer.get("terrain_data"), "terrain_data", required=False)
    terrain = None if terrain_dict is None else _parse_terrain(p, terrain_dict)
    misc = _load_misc(p, outer.get("misc_data"), warnings)
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
        motion = _parse_motion(p, _motion_fields(mf.motion), num_joints, num_bodies, min_frames=1, normalise=True)
        motion_bytes = parc_dumps(_motion_fields(motion))
    terrain_bytes = None
    if mf.terrain is not None:
        t = mf.terrain
        terrain = _parse_terrain(
            p, {"hf": t.hf, "hf_maxmin": t.hf_maxmin, "min_point": t.min_point, "dx": t.dx}
        )
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
    atomic_write_bytes(p, parc_dumps(outer))


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


def _load_misc(path: Path, value: Any, warnings: list[str]) -> dict | None:
    """misc_data is optional extras: failing to load it must not lose the motion."""
    if value is None:
        return None
    try:
        misc = _load_inner(path, value, "misc_data", required=False)
    except MotionFileError as e:
        reason = "unsafe content" if isinstance(e.__cause__, UnsafePickleError) else "unreadable"
        warnings.append(f"{path}: misc_data dropped ({reason}): {e.problem}")
        return None
    return misc


def _float_array(path: Path, section: str, name: str, value: Any) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as non-finite below
            return np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise MotionFileError(path, f"{section}.{name} cannot be converted to float32 ({e})") from e


def _check_shape(path: Path, section: str, name: str, arr: np.ndarray, expected: tuple) -> None:
    """``expected`` holds ints or None (any size) per axis."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        spec = ", ".join("n" if e is None else str(e) for e in expected)
        raise MotionFileError(path, f"{section}.{name} has shape {tuple(arr.shape)}, expected [{spec}]")


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
    """A finite int/float (numpy or Python), not a bool."""
    is_number = isinstance(value, (int, float, np.integer, np.floating))
    return is_number and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))


def _parse_fps(path: Path, value: Any) -> int:
    if _is_real(value) and float(value).is_integer() and value > 0:
        return int(value)
    raise MotionFileError(path, f"motion_data.fps must be a positive integer, got {value!r}")


def _parse_motion(
    path: Path, d: dict, num_joints: int, num_bodies: int, min_frames: int, normalise: bool = False
) -> MotionData:
    """Checked motion data. Reading keeps the file's quaternions as they are, because PARC's
    MotionLib does not normalise them either and a trained policy's observation depends on
    that; writing normalises them."""
    missing = [k for k in (*_MOTION_ARRAYS, "fps") if k not in d]
    if missing:
        raise MotionFileError(path, f"motion_data is missing keys: {', '.join(missing)}")
    arrays = {k: _float_array(path, "motion_data", k, d[k]) for k in _MOTION_ARRAYS}
    expected = {
        "root_pos": (None, 3),
        "root_rot": (None, 4),
        "joint_rot": (None, num_joints, 4),
        "body_contacts": (None, num_bodies),
    }
    for name, arr in arrays.items():
        _check_shape(path, "motion_data", name, arr, expected[name])
    counts = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise MotionFileError(path, f"motion_data arrays disagree on the number of frames ({listing})")
    n = counts["root_pos"]
    if n < min_frames:
        raise MotionFileError(path, f"too few frames: {n} < {min_frames}")
    for name, arr in arrays.items():
        _check_finite_frames(path, name, arr)
    loop_mode = d.get("loop_mode", "CLAMP")
    if loop_mode not in LOOP_MODES:
        raise MotionFileError(path, f"motion_data.loop_mode must be CLAMP or WRAP, got {loop_mode!r}")
    return MotionData(
        root_pos=arrays["root_pos"],
        root_rot=_check_quats(path, "root_rot", arrays["root_rot"], normalise),
        joint_rot=_check_quats(path, "joint_rot", arrays["joint_rot"], normalise),
        body_contacts=arrays["body_contacts"],
        fps=_parse_fps(path, d["fps"]),
        loop_mode=str(loop_mode),
    )


def _parse_terrain(path: Path, d: dict) -> Heightfield:
    missing = [k for k in ("hf", "min_point", "dx") if k not in d]
    if missing:
        raise MotionFileError(path, f"terrain_data is missing keys: {', '.join(missing)}")
    hf = _float_array(path, "terrain_data", "hf", d["hf"])
    _check_shape(path, "terrain_data", "hf", hf, (None, None))
    if hf.size == 0 or not np.isfinite(hf).all():
        raise MotionFileError(path, f"terrain_data.hf of shape {hf.shape} must be non-empty and finite")
    hf_maxmin = d.get("hf_maxmin")
    if hf_maxmin is not None:
        hf_maxmin = _float_array(path, "terrain_data", "hf_maxmin", hf_maxmin)
        _check_shape(path, "terrain_data", "hf_maxmin", hf_maxmin, (*hf.shape, 2))
    min_point = _float_array(path, "terrain_data", "min_point", d["min_point"])
    _check_shape(path, "terrain_data", "min_point", min_point, (2,))
    if not np.isfinite(min_point).all():
        raise MotionFileError(path, f"terrain_data.min_point is not finite: {min_point.tolist()}")
    dx = d["dx"]
    if not (_is_real(dx) and dx > 0):
        raise MotionFileError(path, f"terrain_data.dx must be a positive number, got {dx!r}")
    return Heightfield(hf=hf, min_point=min_point, dx=float(dx), hf_maxmin=hf_maxmin)
