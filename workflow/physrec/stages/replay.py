"""``physrec replay``: re-simulate recorded attempts from their start state and stored actions.

The proof that a record folder holds everything needed to reproduce it (ManiSkill's
trajectory-replay contract). An attempt is simulated again as the recorder simulated it:
in its motion's own frame, over the motion's terrain cropped by the recording's margin in
the batch's number of terrain slots, from the reference state at its start time, with the
stored float32 actions in simulator calls of the stored length, on the backend that recorded
it (MuJoCo Warp on Warp's CPU device where the recording came from a GPU). The states are
compared with `rollouts.h5`'s: bit for bit when the same backend and versions on the same
device recorded it, else within that backend's tolerance (TOLERANCES).
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

# Non-exact replays: the largest qpos or qvel difference accepted.
# - a CPU recording of another MuJoCo version;
DEFAULT_TOLERANCE = 1e-3
# - a MuJoCo Warp recording made on Warp's CPU device, replayed there: float32 states, whose
#   reset frame already differs from the float64 reference by rounding (measured on the demo's
#   12 attempts, deterministic: at most 1.4e-4);
WARP_SAME_DEVICE_TOLERANCE = 1e-3
# - a MuJoCo Warp recording of a GPU, replayed on Warp's CPU device (or, without MuJoCo Warp, on
#   CPU MuJoCo): float32 rounding that differs from the first step and grows with the motion.
#   Not yet measured on a CUDA recording; a Warp CPU recording replayed on CPU MuJoCo differed
#   by up to 0.2 on the demo's attempts, and by metres on a falling one.
WARP_OTHER_DEVICE_TOLERANCE = 5e-2


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


def _replay_backend(by: dict) -> tuple[BackendSpec, float]:
    """The backend to replay on (the recording's own, on the CPU) and the tolerance for the
    recording's backend, versions and device (0: bit for bit)."""
    if by.get("backend") != "mujoco_warp":
        return BackendSpec(), 0.0 if by.get("mujoco_version") == mujoco.__version__ else DEFAULT_TOLERANCE
    try:
        import mujoco_warp
        import warp
    except ImportError:
        return BackendSpec(), WARP_OTHER_DEVICE_TOLERANCE
    same = (str(by.get("device")).lower() == "cpu" and by.get("deterministic")
            and by.get("mujoco_warp_version") == mujoco_warp.__version__ and by.get("warp_version") == warp.__version__)
    spec = BackendSpec(name="mujoco_warp", device="cpu", deterministic=bool(by.get("deterministic")))
    return spec, WARP_SAME_DEVICE_TOLERANCE if same else WARP_OTHER_DEVICE_TOLERANCE


def _replay(name: str, ep: dict, motion: BatchMotion, g: h5py.Group, character: Character, settings: RecordSettings,
            tolerance: float | None) -> ReplayResult:
    """One attempt (its JSON record `ep`, its group `g` of rollouts.h5) simulated again and compared."""
    spec, own = _replay_backend(ep["recorded_by"])  # bit for bit only where the same simulator recorded it
    tol = own if tolerance is None else tolerance
    exact = tol == 0.0
    actions, qpos, qvel = g["actions"][()], g["env_states/qpos"][()], g["env_states/qvel"][()]
    slots = int(ep["terrain_slots"])
    boxes = pad_boxes([motion_boxes(motion, settings.terrain_margin)], slots)
    sim = make_backend(spec, character, settings.physics, 1, slots)
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
