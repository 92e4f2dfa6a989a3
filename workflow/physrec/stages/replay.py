"""``physrec replay``: re-simulate recorded attempts from their start state and stored actions.

The proof that a record folder holds everything needed to reproduce it (ManiSkill's
trajectory-replay contract). An attempt is simulated again as the recorder simulated it:
in its motion's own frame, over the motion's terrain cropped by the recording's margin in
the batch's number of terrain slots, from the reference state at its start time, with the
stored float32 actions in simulator calls of the stored length. The states are compared
with `rollouts.h5`'s: bit for bit when the recording came from the CPU backend with this
MuJoCo version, else within a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import mujoco
import numpy as np

from physrec.formats.rollouts import open_rollouts
from physrec.motion.character import Character
from physrec.motion.reference import reference_state
from physrec.recording.data import BatchMotion
from physrec.recording.plan import build_reference, motion_boxes
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BackendSpec, make_backend
from physrec.sim.world import pad_boxes
from physrec.stages.record_folder import RecordFolder, RecordFolderError

# Non-exact replays (another MuJoCo, MuJoCo Warp's float32): largest qpos difference accepted.
DEFAULT_TOLERANCE = 1e-3


class ReplayError(RecordFolderError):
    """A record folder that cannot be replayed."""


@dataclass
class ReplayResult:
    attempt: str
    motion: str
    steps: int
    exact: bool  # compared bit for bit (else within `tolerance`)
    tolerance: float
    max_diff: float  # largest |qpos| or |qvel| difference over the attempt
    first_bad_step: int | None  # first frame (0 = the reset state) beyond the tolerance; None: it matched

    @property
    def ok(self) -> bool:
        return self.first_bad_step is None

    def describe(self) -> str:
        how = "bit for bit" if self.exact else f"within {self.tolerance:g}"
        if self.ok:
            return f"{self.attempt} ({self.motion}): {self.steps} steps replayed, states match {how}"
        return (f"{self.attempt} ({self.motion}): states differ from frame {self.first_bad_step} of {self.steps} "
                f"(largest difference {self.max_diff:.3g}; expected {how})")


def replay_folder(record_dir: str | Path, attempts: list[str] | None = None,
                  tolerance: float | None = None) -> list[ReplayResult]:
    """Replay `attempts` (names traj_<i>; default all) of one record folder."""
    folder = RecordFolder(record_dir)
    names = attempts or list(folder.episodes)
    folder.check_attempts(names)
    if any("terrain_slots" not in folder.episodes[n] for n in names):
        raise ReplayError(f"{folder.path / 'rollouts.json'}: recorded by a physrec too old to replay "
                          "(its episodes have no terrain_slots)")
    character, settings = folder.character(), folder.settings()
    with open_rollouts(folder.h5) as f:
        unpaired = sorted(set(folder.episodes) ^ {k for k in f if k.startswith("traj_")})
        if unpaired:  # attempts are paired by id: a mismatch is a damaged folder, never a silent skip
            raise ReplayError(f"{folder.path}: rollouts.json and rollouts.h5 disagree on attempt {unpaired[0]}"
                              f"{f' (and {len(unpaired) - 1} more)' if len(unpaired) > 1 else ''}: the folder was "
                              "changed after it was recorded; the next run of the workflow records it again")
        return [_replay(name, folder.episodes[name], folder.motion(name), f[name], character, settings, tolerance)
                for name in names]


def _replay(name: str, ep: dict, motion: BatchMotion, g: h5py.Group, character: Character, settings: RecordSettings,
            tolerance: float | None) -> ReplayResult:
    """One attempt (its JSON record `ep`, its group `g` of rollouts.h5) simulated again and compared."""
    by = ep["recorded_by"]  # bit for bit only where the same simulator recorded it
    exact = by["backend"] == "mujoco" and by["mujoco_version"] == mujoco.__version__ and tolerance is None
    tol = 0.0 if exact else (DEFAULT_TOLERANCE if tolerance is None else tolerance)
    actions, qpos, qvel = g["actions"][()], g["env_states/qpos"][()], g["env_states/qvel"][()]
    slots = int(ep["terrain_slots"])
    boxes = pad_boxes([motion_boxes(motion, settings.terrain_margin)], slots)
    sim = make_backend(BackendSpec(), character, settings.physics, 1, slots)
    try:
        sim.set_terrain(np.arange(1), boxes)
        env = np.arange(1)
        q0, v0 = reference_state(build_reference(character, [motion]), np.zeros(1, dtype=np.int64),
                                 np.array([float(ep["start_time"])]))
        sim.reset(env, q0, v0)
        got_q, got_v = [q0[0]], [v0[0]]
        step = max(1, int(ep.get("steps_per_call", 1)))
        for k in range(0, len(actions), step):
            out = sim.step(env, actions[None, k:k + step].astype(np.float64))
            got_q += list(out.qpos[0])
            got_v += list(out.qvel[0])
    finally:
        sim.close()
    sim_q, sim_v = np.array(got_q), np.array(got_v)
    sim_q[:, :2] += np.asarray(ep["world_offset"])  # into the batch's tiled world, as the recorder writes
    diff = np.maximum(np.abs(sim_q - qpos).max(axis=1), np.abs(sim_v - qvel).max(axis=1))
    bad = np.flatnonzero(diff > tol)
    return ReplayResult(name, ep["motion"], len(actions), exact, tol, float(diff.max(initial=0.0)),
                        int(bad[0]) if len(bad) else None)
