"""The observer: a learned tracker's observation of the recorder's simulator states, in the
layout its tracker names (observations.OBSERVATIONS)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from physrec.formats.motion_file import MotionData
from physrec.motion.character import Character
from physrec.motion.reference import Lookahead
from physrec.motion.terrain import Heightfield
from physrec.observations import observation_module


class Observer:
    """The tracker's observation of simulator states: MuJoCo state -> PARC quantities -> layout.

    States are in each motion's own coordinates, where the observation's reference and
    terrain live. Motion time follows PARC's model:
    float32 start time plus float32(control_dt) x steps since the reset. Target frames do
    not depend on the state, so they are looked up for `window` control steps at a time.
    """

    window = 8

    def __init__(self, name: str, character: Character, motions: list[MotionData], terrains: list[Heightfield],
                 control_dt: float, device: str = "cpu") -> None:
        import torch  # only trackers with an observation pay for torch

        from physrec.observations.parc import CharacterState
        self._torch, self._state = torch, CharacterState
        self.character, self.device = character, device
        self.layout = observation_module(name).Observation(character, motions, terrains, control_dt, device)
        self.size = observation_module(name).observation_size(character)

    def inference_mode(self) -> contextlib.AbstractContextManager:
        """torch's inference mode: a quarter less overhead per tensor operation; nothing in a
        recording needs gradients."""
        return self._torch.inference_mode()

    def start(self, motion: np.ndarray, fraction: float | np.ndarray) -> None:
        """A new pass: environment e follows motion[e] from `fraction` of its length (one float, or
        one per environment: segment restarts)."""
        self.motion, self.fraction = motion, fraction
        self._targets = Lookahead(len(motion), self.window, self._lookup_targets)
        self._env: np.ndarray | None = None

    def _motion_ids(self, env: np.ndarray):
        """motion[env] on the device, copied once while `env` stays the same: a host-to-GPU
        copy per control step would make the host wait for the GPU each time."""
        if self._env is None or not np.array_equal(env, self._env):
            self._env = np.array(env, copy=True)
            self._ids = self._torch.as_tensor(self.motion[env], device=self.device)
        return self._ids

    def _lookup_targets(self, env: np.ndarray, step: int, count: int):
        """Target frames of `env` at steps step .. step+count-1, step-major: row column * len(env) + e."""
        torch = self._torch
        ids = self._motion_ids(env).repeat(count)
        steps = torch.arange(step, step + count, dtype=torch.int32, device=self.device).repeat_interleave(len(env))
        fraction = self.fraction if np.ndim(self.fraction) == 0 else np.tile(np.asarray(self.fraction)[env], count)
        return self.layout.targets(ids, self.layout.motion_time(ids, fraction, steps))

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray, env: np.ndarray, step: int,
                 joint_rot: np.ndarray | None = None, body_pos: np.ndarray | None = None):
        """Observations [len(env), O] of the pass's environments `env` in states qpos, qvel, `step`
        control steps after reset; `joint_rot` [m, J, 4] and `body_pos` [m, B, 3] if the caller has them."""
        return self.rows(self.prepare(env, step, qpos), slice(0, len(env)), qpos, qvel, contacts, joint_rot, body_pos)

    def prepare(self, env: np.ndarray, step: int, qpos: np.ndarray) -> "Sight":
        """What the observations of environments `env` in states `qpos` [m, nq] share, looked up on
        the calling thread: the motion ids and target frames (cached lookups: not thread-safe), and
        the parts of the observation whose bits depend on how many rows are computed together
        (the layout's `whole`). `rows` then computes any slice of the rows, on any thread, with
        the bits of one call for all of them."""
        root_rot = self._torch.as_tensor(self.character.root_rotation(qpos).astype(np.float32), device=self.device)
        return Sight(self._motion_ids(env), self._frames(env, step), self.layout.whole(root_rot))

    def rows(self, sight: "Sight", rows: slice, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray,
             joint_rot: np.ndarray | None = None, body_pos: np.ndarray | None = None):
        """Observations of rows `rows` of a prepared set, from their states (qpos ... body_pos:
        those rows only, as in __call__)."""
        arrays = self.character.parc_state(qpos, qvel)
        arrays["contacts"] = contacts
        if joint_rot is not None and body_pos is not None:
            arrays["joint_rot"] = joint_rot
            arrays["key_pos"] = body_pos[:, self.layout.key_index]
        state = self._state.from_arrays(arrays, self.device)
        return self.layout.compute(state, sight.ids[rows], None, sight.targets.rows(rows),
                                   {k: v[rows] for k, v in sight.whole.items()})

    def observe(self, state, env: np.ndarray, step: int):
        """Observations of environments `env` in `state` (observations.parc.CharacterState on
        this observer's device), `step` control steps after reset."""
        return self.layout.compute(state, self._motion_ids(env), None, self._frames(env, step))

    def _frames(self, env: np.ndarray, step: int):
        """The target frames of environments `env` at `step`, rows in the order of `env`."""
        targets, rows, col = self._targets.get(env, step)
        width = self._targets.width
        if len(rows) == width:  # every environment of the lookup, in its order: views, no gather
            return targets.rows(slice(col * width, (col + 1) * width))
        return targets.rows(self._torch.as_tensor(col * width + rows, device=self.device))


@dataclass(frozen=True)
class Sight:
    """Observer.prepare's lookups for m environments: motion ids [m], target frames (m rows), and
    the layout's whole-batch tensors (name -> [m, ...])."""

    ids: Any
    targets: Any
    whole: dict[str, Any]
