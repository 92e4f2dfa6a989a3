"""Reference motions of a batch, sampled at arbitrary times for many environments at once: the
reset state an attempt starts from, and a cache of lookups for the next control steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from physrec.motion import quat
from physrec.motion.character import Character


@dataclass(frozen=True)
class ReferencePose:
    """Interpolated reference poses for N environments (root rotation and joints x,y,z,w)."""

    root_pos: np.ndarray  # [N, 3]
    root_rot: np.ndarray  # [N, 4]
    joint_rot: np.ndarray  # [N, J, 4]


@dataclass(frozen=True)
class ReferenceVelocity:
    root_lin_vel: np.ndarray  # [N, 3] world
    root_ang_vel: np.ndarray  # [N, 3] world
    dof_vel: np.ndarray  # [N, D]


class ReferenceSet:
    """All reference motions of a batch, concatenated so a lookup is one fancy index.

    Each motion is in its own coordinates (its file's). Times past a
    motion's end are clamped to its last frame (PARC's CLAMP loop mode).
    """

    def __init__(self, character: Character, root_pos: list[np.ndarray], root_rot: list[np.ndarray],
                 joint_rot: list[np.ndarray], fps: list[int]) -> None:
        self.character = character
        self.num_frames = np.array([len(p) for p in root_pos])
        self.first = np.concatenate([[0], np.cumsum(self.num_frames)[:-1]])
        self.fps = np.asarray(fps, dtype=np.float64)
        self.length = (self.num_frames - 1) / self.fps
        self.root_pos = np.concatenate(root_pos).astype(np.float64)
        self.root_rot = quat.normalize(np.concatenate(root_rot).astype(np.float64))
        self.joint_rot = quat.normalize(np.concatenate(joint_rot).astype(np.float64))

    def _frames(self, motion: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global indices of the frames around t and the blend weight."""
        t = np.clip(t, 0.0, self.length[motion])
        x = t * self.fps[motion]
        f0 = np.minimum(np.floor(x + 1e-9).astype(np.int64), self.num_frames[motion] - 1)
        f1 = np.minimum(f0 + 1, self.num_frames[motion] - 1)
        w = np.clip(x - f0, 0.0, 1.0)
        return self.first[motion] + f0, self.first[motion] + f1, w

    def pose(self, motion: np.ndarray, t: np.ndarray) -> ReferencePose:
        i0, i1, w = self._frames(motion, t)
        root_pos = (1.0 - w)[:, None] * self.root_pos[i0] + w[:, None] * self.root_pos[i1]
        root_rot = quat.slerp(self.root_rot[i0], self.root_rot[i1], w)
        joint_rot = quat.slerp(self.joint_rot[i0], self.joint_rot[i1], w[:, None])
        return ReferencePose(root_pos, root_rot, joint_rot)

    def velocity(self, motion: np.ndarray, t: np.ndarray) -> ReferenceVelocity:
        """Forward differences from the frame at or before t, as PARC initialises episodes."""
        i0, _, _ = self._frames(motion, t)
        last = self.first[motion] + self.num_frames[motion] - 1
        a = np.where(i0 >= last, np.maximum(i0 - 1, self.first[motion]), i0)
        b = np.minimum(a + 1, last)
        fps = self.fps[motion][:, None]
        lin = (self.root_pos[b] - self.root_pos[a]) * fps
        ang = quat.quat_to_exp_map(quat.mul(self.root_rot[b], quat.conj(self.root_rot[a]))) * fps
        dof = self.character.dof_vel(self.joint_rot[a], self.joint_rot[b], 1.0) * fps
        same = (a == b)[:, None]
        return ReferenceVelocity(np.where(same, 0.0, lin), np.where(same, 0.0, ang), np.where(same, 0.0, dof))

    def body_pos(self, pose: ReferencePose) -> np.ndarray:
        return self.character.body_positions(pose.root_pos, pose.root_rot, pose.joint_rot)


def reference_state(ref: ReferenceSet, motion: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo qpos [m, nq], qvel [m, nv] of the reference of `motion` at times `t`: where an
    attempt starts (PARC's reset: the reference pose with its velocities)."""
    ch = ref.character
    pose, vel = ref.pose(motion, t), ref.velocity(motion, t)
    return (ch.pose_to_qpos(pose.root_pos, pose.root_rot, pose.joint_rot),
            ch.velocities_to_qvel(pose.root_rot, vel.root_lin_vel, vel.root_ang_vel, vel.dof_vel))


class Lookahead:
    """Per-environment values of the next control steps, looked up `span` steps at a time.

    A closed-loop tracker advances one control step per simulator call; looking up the
    reference for that one step alone costs a batch of small array operations every step.
    This keeps the last lookup (environments `env`, steps first .. first + size - 1) and
    says where a later request falls in it, so most steps reuse it.
    """

    def __init__(self, n: int, span: int, lookup: Callable[[np.ndarray, int, int], Any]) -> None:
        self.span, self.lookup = span, lookup
        self.row = np.full(n, -1)
        self.first = self.size = self.width = 0  # width: environments in the last lookup
        self.value: Any = None

    def get(self, env: np.ndarray, step: int, count: int = 1) -> tuple[Any, np.ndarray, int]:
        """(the lookup, the rows of `env` in it, the column of `step`) for steps step .. step+count-1."""
        if not self.first <= step <= self.first + self.size - count or (self.row[env] < 0).any():
            self.size = max(count, self.span)
            self.value = self.lookup(env, step, self.size)
            self.row[:] = -1
            self.row[env] = np.arange(len(env))
            self.first, self.width = step, len(env)
        return self.value, self.row[env], step - self.first

