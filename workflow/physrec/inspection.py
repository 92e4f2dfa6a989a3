"""Inspection commands for debugging a policy that does not track: observations and actions
computed from files, outside any simulation (``physrec parc-obs``, ``physrec parc-act``), and
the states of a recorded attempt in the form ``parc-obs`` reads (``physrec states``).

The file formats are those of PARC's oracle fixtures: STATES.npz holds N character states
(``time`` [N] reference time in seconds, ``root_pos`` [N,3], ``root_rot`` [N,4] x,y,z,w,
``root_vel`` [N,3] and ``root_ang_vel`` [N,3] in world axes, ``dof`` [N,D] and ``dof_vel``
[N,D] in PARC's DOF coordinates, ``contacts`` [N,B] 0/1); OBS.npy is float32 [N,O]; ACT.npy
is float32 [N,D], clipped to the action bounds.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from physrec.formats.atomic import atomic_write_bytes
from physrec.formats.files import UnsafeFileError, read_regular_file
from physrec.formats.motion_file import Limits, MotionFileError, read_source
from physrec.formats.safe_zip import UnsafeZipError, open_checked_zip
from physrec.motion.character import Character
from physrec.stages.index import check_motion


class InspectionError(ValueError):
    """A bad input file of an inspection command; the message names it."""


# STATES.npz, OBS.npy: N frames of a few kB each; a million frames fit.
MAX_ARRAY_MB = 4096
_LIMIT = f"physrec's limit for inspection arrays (MAX_ARRAY_MB, {MAX_ARRAY_MB} MB)"


def _read(path: Path) -> bytes:
    """A regular file within the limit: a FIFO or /dev/zero is refused, never read."""
    try:
        return read_regular_file(path, MAX_ARRAY_MB * 1e6, _LIMIT)
    except UnsafeFileError as e:
        raise InspectionError(str(e)) from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    data = _read(path)
    try:
        open_checked_zip(data, str(path), int(MAX_ARRAY_MB * 1e6), _LIMIT).close()
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except UnsafeZipError as e:
        raise InspectionError(f"{e} (expected an .npz archive of named arrays)") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InspectionError(f"{path}: not a readable .npz file of plain arrays ({e})") from None


def _load_npy(path: Path) -> np.ndarray:
    data = _read(path)
    if zipfile.is_zipfile(io.BytesIO(data)):
        raise InspectionError(f"{path}: an .npz archive, expected a single .npy array")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InspectionError(f"{path}: not a readable .npy array ({e})") from None


def _check(path: Path, name: str, arr: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        spec = ", ".join("N" if s is None else str(s) for s in shape)
        raise InspectionError(f"{path}: {name} has shape {tuple(arr.shape)}, expected [{spec}]")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise InspectionError(f"{path}: {name} must hold finite numbers")
    return arr.astype(np.float32)


def read_states(path: Path, character: Character) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(time [N], the CharacterState arrays) from STATES.npz, every key and shape checked."""
    from physrec.observations.parc import CharacterState
    arrays = _load_npz(path)
    D, B = character.num_dof, character.num_bodies
    shapes = {"time": (None,), "root_pos": (None, 3), "root_rot": (None, 4), "root_vel": (None, 3),
              "root_ang_vel": (None, 3), "dof": (None, D), "dof_vel": (None, D), "contacts": (None, B)}
    missing = [k for k in shapes if k not in arrays]
    if missing:
        raise InspectionError(f"{path}: missing arrays {', '.join(missing)}")
    out = {k: _check(path, k, arrays[k], s) for k, s in shapes.items()}
    sizes = {len(v) for v in out.values()}
    if len(sizes) != 1:
        raise InspectionError(f"{path}: arrays disagree on N ({', '.join(f'{k} {len(v)}' for k, v in out.items())})")
    return out.pop("time"), {k: out[k] for k in CharacterState.FIELDS}


def attempt_states(record_dir: Path, attempt: str, out: Path) -> tuple[int, str]:
    """STATES.npz of a recorded attempt (traj_<i> of a record folder): every frame's state after
    the reset and after each control step, in its motion's own coordinates (the batch's world
    offset taken off) and PARC's quantities, at its reference time. Returns (frames, the motion's
    source file, the reference `parc-obs` wants)."""
    from physrec.formats.rollouts import open_rollouts
    from physrec.stages.record_folder import RecordFolder
    folder = RecordFolder(record_dir)
    folder.check_attempts([attempt])
    ep = folder.episodes[attempt]
    with open_rollouts(folder.h5) as f:
        g = f[attempt]
        qpos, qvel = g["env_states/qpos"][()], g["env_states/qvel"][()]
        contacts, time = g["body_contacts"][()], g["ref_time"][()]
    qpos[:, :2] -= np.asarray(ep["world_offset"])
    arrays = {"time": time, **folder.character().parc_state(qpos, qvel), "contacts": contacts}
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    atomic_write_bytes(out, buf.getvalue())
    return len(time), ep["source_path"]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def parc_obs(reference: Path, states: Path, out: Path, character: Character, control_hz: int = 30) -> np.ndarray:
    """PARC's observation of the states following `reference` on the reference's own terrain."""
    import torch

    from physrec.observations.parc import CharacterState, Observation
    try:
        mf = check_motion(reference, read_source(reference, Limits().max_file_mb * 1e6), num_joints=character.num_joints,
                          num_bodies=character.num_bodies)
    except MotionFileError as e:
        raise InspectionError(str(e)) from None
    time, arrays = read_states(states, character)
    layout = Observation(character, [mf.motion], [mf.terrain], 1.0 / control_hz)  # type: ignore[list-item]
    n = len(time)
    obs = layout.compute(CharacterState.from_arrays(arrays), torch.zeros(n, dtype=torch.long),
                         torch.as_tensor(time)).numpy()
    _save_npy(out, obs)
    return obs


def parc_act(model: Path, obs_path: Path, out: Path, character: Character) -> np.ndarray:
    """The PARC checkpoint's test-time PD targets for stored observations, clipped to the bounds."""
    import torch

    from physrec.observations import observation_size
    from physrec.trackers.parc_policy import OBSERVATION, load_actor
    size = observation_size(OBSERVATION, character)
    actor = load_actor(model, size, character.num_dof)
    obs = _check(obs_path, "the observation array", _load_npy(obs_path), (None, size))
    with torch.inference_mode():
        action = actor(torch.as_tensor(obs)).numpy()
    action = character.clip_action(action).astype(np.float32)
    _save_npy(out, action)
    return action
