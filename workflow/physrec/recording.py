"""Recording one batch: every motion tracked in simulation, with later-start retries.

The full-length pass runs first. Motions that failed are retried from later start
fractions (PARC: 0.1 ... 0.5), one pass per fraction and only for motions still failing,
skipping starts that leave less than the minimum remaining length. Every attempt is kept
for the trajectory file; selection decides later which one becomes the recorded motion.

Each motion is simulated in its own coordinates over only the part of its terrain its
character can reach, in environment i of the backend for motion i. The batch's tiled world
(PARC's layout, see motion.terrain.tile_square) exists only in the outputs: attempts are
moved into it by the motion's offset when they are collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from physrec.formats.hashing import stable_hash
from physrec.formats.motion_file import MotionData
from physrec.motion import termination
from physrec.motion.character import Character
from physrec.motion.reference import ReferenceSet
from physrec.progress import PassProgress
from physrec.motion.terrain import (Heightfield, TiledTerrain, reachable_boxes, solid_boxes,
                                    tile_square)
from physrec.sim.backend import (BackendOutOfMemory, BackendSpec, LimitExceeded, SimBackend, backend_capacity,
                                 make_backend, tensor_device)
from physrec.sim.world import PhysicsSettings, pad_boxes
from physrec.trackers.base import Plan, Planner, PlanRequest, Tracker, TrackingInput, is_planner

MAX_LIMIT_SCALE = 16  # a batch whose buffers overflow at 16x the defaults fails its job


@dataclass(frozen=True)
class RecordSettings:
    physics: PhysicsSettings = field(default_factory=PhysicsSettings)
    termination: termination.TerminationSettings = field(default_factory=termination.TerminationSettings)
    start_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    min_remaining: float = 2.0  # seconds a later start must leave
    # Control steps simulated per call for open-loop trackers: an attempt that terminates
    # mid-call wastes at most this many steps, and Python runs once per call, not per step.
    max_steps_per_call: int = 8
    save_obs: bool = True  # keep the observations a learned tracker saw, per attempt
    # Terrain kept around a motion's reference root path. The character's root stays within
    # termination.root_pos_error of that path and its geoms within Character.reach of its
    # root, so a margin above their sum cannot change a contact before a termination fires.
    terrain_margin: float = 3.0
    # Longest motion recorded (longer ones are invalid, stages.index): every attempt then has at
    # most max_episode_steps control steps, the trajectory files' env_info.max_episode_steps.
    max_duration: float = 1000.0

    @property
    def max_episode_steps(self) -> int:
        """attempt_steps of the longest motion from its start: no attempt has more (the step count
        only grows with the time left, also in floating point)."""
        return int(attempt_steps(np.array([self.max_duration]), np.zeros(1), 1.0 / self.physics.control_hz)[0])


@dataclass(frozen=True)
class BatchMotion:
    name: str
    motion: MotionData
    terrain: Heightfield


@dataclass
class Attempt:
    """One episode: a motion tracked from one start time until termination or its end."""

    motion: int  # index into the batch's motions
    start_fraction: float
    start_time: float
    end_time: float
    success: bool
    fail_reason: str  # "" when the attempt reached the end
    actions: np.ndarray  # [T, D] clipped PD targets
    qpos: np.ndarray  # [T+1, nq] world-frame MuJoCo state after reset and after each control step
    qvel: np.ndarray  # [T+1, nv]
    contacts: np.ndarray  # [T+1, B] bool
    errors: np.ndarray  # [T, 4] termination.ERROR_COLUMNS
    ref_time: np.ndarray  # [T+1] motion time of each frame
    obs: np.ndarray | None = None  # [T+1, O] float32: the tracker's observation at each frame
    # Control steps per simulator call: MuJoCo's solver warm start restarts at each call, so
    # a replay of `actions` reproduces `qpos` bit for bit only in calls of this length.
    steps_per_call: int = 1
    search: dict[str, Any] | None = None  # a planner's statistics (trackers.base.Plan.stats), with how pd did

    @property
    def kept_steps(self) -> int:
        """Steps whose frames may go into a recorded motion: none at or past a termination."""
        return self.steps - 1 if self.terminated else self.steps

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def terminated(self) -> bool:
        return bool(self.fail_reason)


@dataclass
class BatchRecording:
    motions: list[BatchMotion]
    tiled: TiledTerrain  # the batch's world in the outputs; attempts are in its coordinates
    attempts: list[Attempt]
    tracker_desc: str
    provenance: dict[str, Any] = field(default_factory=dict)  # the backend's (sim.backend.SimBackend)
    wall_seconds: float = 0.0
    sim_steps: int = 0  # physics steps simulated, summed over environments (a planner's search included)
    terrain_slots: int = 1  # terrain box slots of every environment (sim.world): a replay needs the same

    def world_boxes(self) -> np.ndarray:
        """The tiled world as boxes, for the terrain mesh of PARC's terrain file: drawn, never
        simulated, and at GPU batch sizes tens of millions of cells (4096 PARC terrains)."""
        return solid_boxes(self.tiled.world, fast=True)


def motion_boxes(m: BatchMotion, margin: float) -> np.ndarray:
    """Boxes of the part of a motion's terrain its character can reach, in the motion's frame."""
    return reachable_boxes(m.terrain, m.motion.root_pos[:, :2], margin)


def batch_boxes(motions: list[BatchMotion], margin: float) -> np.ndarray:
    """Every motion's cropped terrain, padded to one box count: [N, slots, 6]. Motions that
    share their motion and terrain objects (a benchmark's copies) share the work: about a
    millisecond per motion, a minute for 65536."""
    keys = [(id(m.motion), id(m.terrain)) for m in motions]
    made: dict[tuple[int, int], np.ndarray] = {}
    for key, m in zip(keys, motions):
        if key not in made:
            made[key] = motion_boxes(m, margin)
    return pad_boxes([made[key] for key in keys])


def open_backend(spec: BackendSpec, character: Character, motions: list[BatchMotion],
                 settings: RecordSettings) -> SimBackend:
    """A backend with one environment per motion, each on its own cropped terrain."""
    padded = batch_boxes(motions, settings.terrain_margin)
    sim = make_backend(spec, character, settings.physics, len(motions), padded.shape[1])
    sim.set_terrain(np.arange(len(motions)), padded)
    return sim


def build_reference(character: Character, motions: list[BatchMotion]) -> ReferenceSet:
    return ReferenceSet(character, [m.motion.root_pos for m in motions], [m.motion.root_rot for m in motions],
                        [m.motion.joint_rot for m in motions], [m.motion.fps for m in motions])


def reference_state(ref: ReferenceSet, motion: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo qpos [m, nq], qvel [m, nv] of the reference of `motion` at times `t`: where an
    attempt starts (PARC's reset: the reference pose with its velocities)."""
    ch = ref.character
    pose, vel = ref.pose(motion, t), ref.velocity(motion, t)
    return (ch.pose_to_qpos(pose.root_pos, pose.root_rot, pose.joint_rot),
            ch.velocities_to_qvel(pose.root_rot, vel.root_lin_vel, vel.root_ang_vel, vel.dof_vel))


def episode_seed(seed: int, name: str, fraction: float) -> int:
    """Per-attempt seed derived from the run seed, stable under batch changes."""
    return int(stable_hash([seed, name, round(fraction, 9)])[:8], 16)


def attempt_steps(length: np.ndarray, t0: np.ndarray, dt: float) -> np.ndarray:
    """Control steps from start times t0 to the motions' ends (at least one)."""
    return np.maximum(1, np.ceil((length - t0) / dt - 1e-6).astype(np.int64))


def success_steps(length: np.ndarray, t0: np.ndarray, dt: float, end_tolerance: float) -> np.ndarray:
    """Fewest control steps after which an attempt that terminates still succeeded: it
    ended within end_tolerance of its motion's end (the rule of _Pass._success)."""
    full = attempt_steps(length, t0, dt)
    return np.minimum(full, np.maximum(1, np.ceil((length - end_tolerance - t0) / dt - 1e-6).astype(np.int64)))


def start_plan(lengths: np.ndarray, fraction: float, pending: np.ndarray, min_remaining: float) -> np.ndarray:
    """Motions to attempt from `fraction`: still pending, and (for later starts) long enough."""
    if fraction == 0.0:
        return pending.copy()
    return pending & ((1.0 - fraction) * lengths >= min_remaining - 1e-9)


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


class _Pass:
    """Environments of one start fraction, stepped together until each ends."""

    def __init__(self, sim: SimBackend, ref: ReferenceSet, settings: RecordSettings, motion: np.ndarray,
                 fraction: float, offsets: np.ndarray, observer: Observer | None = None,
                 plans: list[Plan] | None = None) -> None:
        self.sim, self.ref, self.settings, self.observer = sim, ref, settings, observer
        self.offsets = offsets
        self.ch = ref.character
        self.dt = 1.0 / settings.physics.control_hz
        self.motion = motion
        self.fraction = fraction
        self.t0 = fraction * ref.length[motion]
        self.steps = attempt_steps(ref.length[motion], self.t0, self.dt)
        # A planner's targets may stop short of the end: the attempt ends there, for its reason.
        self.cut = [""] * len(motion)
        self.horizon = 1  # control steps per simulator call, set by run()
        if plans is not None:
            self.steps = np.minimum(self.steps, np.maximum(1, [len(p.targets) for p in plans]))
            self.cut = [p.reason or ("" if self._success(e, int(self.steps[e]), "plan_incomplete") else
                                     "plan_incomplete") for e, p in enumerate(plans)]

    def _reference_window(self, idx: np.ndarray, k: int, h: int, with_dof: bool) -> tuple[np.ndarray, ...]:
        """Reference at control steps k+1 .. k+h of environments `idx`, in one vectorised lookup.

        Returns body positions [m, h, B, 3], root rotations [m, h, 4] and DOF [m, h, D]
        (None unless `with_dof`: trackers that read an observation take their reference from it).
        """
        m = len(idx)
        motion = np.repeat(self.motion[idx], h)
        times = (self.t0[idx, None] + (k + 1 + np.arange(h))[None, :] * self.dt).reshape(-1)
        pose = self.ref.pose(motion, times)
        body = self.ref.body_pos(pose).reshape(m, h, self.ch.num_bodies, 3)
        dof = self.ch.joint_rot_to_dof(pose.joint_rot).reshape(m, h, self.ch.num_dof) if with_dof else None
        return body, pose.root_rot.reshape(m, h, 4), dof

    def _reset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every environment on its reference at its start time: qpos, qvel, contacts."""
        qpos0, qvel0 = reference_state(self.ref, self.motion, self.t0)
        return qpos0, qvel0, self.sim.reset(self.motion, qpos0, qvel0)

    def run(self, tracker: Tracker, on_finish: Callable[[int, bool], None]) -> list[Attempt]:
        ch, sim, n, K = self.ch, self.sim, len(self.motion), int(self.steps.max())
        horizon = min(self.settings.max_steps_per_call, tracker.max_horizon or self.settings.max_steps_per_call)
        self.horizon = horizon
        with_dof = self.observer is None
        reference = Lookahead(n, 1 if horizon > 1 else Observer.window,
                              lambda env, step, count: self._reference_window(env, step, count, with_dof))
        qpos0, qvel0, contacts0 = self._reset()
        Q = np.zeros((n, K + 1, ch.nq)); V = np.zeros((n, K + 1, ch.nv))
        C = np.zeros((n, K + 1, ch.num_bodies), dtype=bool)
        A = np.zeros((n, K, ch.num_dof)); E = np.zeros((n, K, len(termination.ERROR_COLUMNS)))
        Q[:, 0], V[:, 0], C[:, 0] = qpos0, qvel0, contacts0
        qpos_now, qvel_now = qpos0.copy(), qvel0.copy()
        obs, O = None, None
        if self.observer is not None:
            self.observer.start(self.motion, self.fraction)
            root_pos, root_rot, joint_rot = ch.qpos_to_pose(qpos0)
            obs = self.observer(qpos0, qvel0, contacts0, np.arange(n), 0, joint_rot,
                                ch.body_positions(root_pos, root_rot, joint_rot))
            if self.settings.save_obs:
                O = np.zeros((n, K + 1, obs.shape[1]), dtype=np.float32)
                O[:, 0] = obs.cpu().numpy()
        end = self.steps.copy()
        reasons = [""] * n
        active = np.ones(n, dtype=bool)
        k = 0
        while k < K and active.any():
            idx = np.flatnonzero(active)
            H = min(horizon, int(self.steps[idx].max()) - k)
            (ref_body, ref_root_rot, ref_dof), rows, col = reference.get(idx, k, H)
            ref_body, ref_root_rot = ref_body[rows, col:col + H], ref_root_rot[rows, col:col + H]
            ref_dof = None if ref_dof is None else ref_dof[rows, col:col + H]
            inp = TrackingInput(qpos_now[idx], qvel_now[idx], self.motion[idx], self.t0[idx] + k * self.dt, self.dt,
                                ref_dof, None if obs is None else obs[idx])
            # float32, as `actions` are stored: the recording replays exactly (physrec replay)
            targets = ch.clip_action(tracker.act(inp)).astype(np.float32).astype(np.float64)
            h = targets.shape[1]
            bad = ~np.isfinite(targets).all(axis=(1, 2))  # a policy's NaN ends its attempt, not the batch
            targets[bad] = 0.0
            out = sim.step(self.motion[idx], targets)
            qpos, contacts = out.qpos, out.contacts  # [m, h, nq], [m, h, B]
            root_pos, root_rot, joint_rot = ch.qpos_to_pose(qpos)
            body_pos = ch.body_positions(root_pos, root_rot, joint_rot)  # [m, h, B, 3]
            m = len(idx)
            chk = termination.check(
                body_pos.reshape(m * h, -1, 3), root_rot.reshape(m * h, 4),
                ref_body[:, :h].reshape(m * h, -1, 3), ref_root_rot[:, :h].reshape(m * h, 4),
                self.settings.termination)
            window = slice(k + 1, k + 1 + h)
            Q[idx, window], V[idx, window], C[idx, window] = qpos, out.qvel, contacts
            A[idx, k:k + h], E[idx, k:k + h] = targets, chk.errors.reshape(m, h, -1)
            qpos_now[idx], qvel_now[idx] = qpos[:, -1], out.qvel[:, -1]
            if obs is not None:
                seen = self.observer(qpos[:, -1], out.qvel[:, -1], contacts[:, -1], idx, k + h,
                                     joint_rot[:, -1], body_pos[:, -1])
                obs[idx] = seen
                if O is not None:
                    O[idx, k + h] = seen.cpu().numpy()
            tick = getattr(on_finish, "tick", None)
            if tick is not None:
                tick(k + h, K, m, self.dt)
            code, body = chk.code.reshape(m, h), chk.body.reshape(m, h)
            code[bad, 0] = termination.BAD_ACTION
            done = (code != termination.OK) | (k + 1 + np.arange(h)[None, :] >= self.steps[idx, None])
            for j in np.flatnonzero(done.any(axis=1)):
                e, first = idx[j], int(np.argmax(done[j]))
                end[e] = k + 1 + first
                reasons[e] = termination.reason(int(code[j, first]), int(body[j, first]), ch.body_names) or self.cut[e]
                active[e] = False
                on_finish(e, self._success(e, int(end[e]), reasons[e]))
            k += h
        return [self._attempt(e, int(end[e]), reasons[e], Q, V, C, A, E, O) for e in range(n)]

    def _end_time(self, e: int, steps: int) -> float:
        return float(min(self.t0[e] + steps * self.dt, self.ref.length[self.motion[e]]))

    def _success(self, e: int, steps: int, reason: str) -> bool:
        length = self.ref.length[self.motion[e]]
        return not reason or self._end_time(e, steps) >= length - self.settings.termination.end_tolerance - 1e-9

    def _attempt(self, e: int, T: int, reason: str, Q, V, C, A, E, O) -> Attempt:
        qpos = Q[e, :T + 1].copy()
        qpos[:, :2] += self.offsets[self.motion[e]]  # into the batch's tiled world
        return Attempt(
            motion=int(self.motion[e]), start_fraction=float(self.fraction), start_time=float(self.t0[e]),
            end_time=self._end_time(e, T), success=bool(self._success(e, T, reason)), fail_reason=reason,
            actions=A[e, :T].astype(np.float32), qpos=qpos, qvel=V[e, :T + 1].copy(),
            contacts=C[e, :T + 1].copy(), errors=E[e, :T].astype(np.float32),
            ref_time=np.minimum(self.t0[e] + np.arange(T + 1) * self.dt, self.ref.length[self.motion[e]]),
            obs=None if O is None else O[e, :T + 1].copy(), steps_per_call=self.horizon)


class PlanReplay:
    """An open-loop tracker that plays back a planner's targets, one plan per environment of
    a pass, in simulator calls of the planner's length (see trackers.base.Planner)."""

    kind = "replay"
    observation = None

    def __init__(self, planner: Planner, plans: list[Plan], run: _Pass) -> None:
        self.planner, self.max_horizon = planner, planner.replay_steps
        self.targets = {int(m): p.targets for m, p in zip(run.motion, plans)}
        self.t0 = {int(m): t for m, t in zip(run.motion, run.t0)}

    def describe(self) -> str:
        return self.planner.describe()

    def act(self, inp: TrackingInput) -> np.ndarray:
        assert inp.ref_dof is not None
        out = inp.ref_dof.copy()  # past a plan's end (its attempt stops there): the reference
        h = out.shape[1]
        for i, (m, t) in enumerate(zip(inp.motion, inp.time)):
            plan = self.targets[int(m)]
            k = round((t - self.t0[int(m)]) / inp.control_dt)
            part = plan[k:k + h]
            out[i, :len(part)] = part
        return out


def _planned_pass(planner: Planner, sim: SimBackend, ref: ReferenceSet, settings: RecordSettings,
                  todo: np.ndarray, fraction: float, offsets: np.ndarray, request: Callable[..., PlanRequest],
                  progress: Callable[[int, bool], None], say: Callable[[str], None]) -> list[Attempt]:
    """One pass of a planner: its open-loop tracker first (pd), then a plan for each attempt
    that one failed, replayed by the recorder; the attempts in `todo` order."""
    found: dict[int, Attempt] = {}
    first: dict[int, Attempt] = {}
    if planner.first is not None:
        for a in _Pass(sim, ref, settings, todo, fraction, offsets).run(planner.first, lambda e, ok: None):
            first[a.motion] = a
            if a.success:
                a.search = {"method": planner.first.kind}
                found[a.motion] = a
                progress(0, True)
        say(f"{planner.first.kind} recorded {len(found)}/{len(todo)}; searching {len(todo) - len(found)}")
    rest = np.array([m for m in todo if m not in found], dtype=np.int64)
    if len(rest):
        plans = planner.plan(request(rest))
        run = _Pass(sim, ref, settings, rest, fraction, offsets, plans=plans)
        for a, p in zip(run.run(PlanReplay(planner, plans, run), progress), plans):
            a.search = dict(p.stats)
            if a.motion in first:
                a.search.update(first_tracker=planner.first.kind,  # type: ignore[union-attr]
                                first_end_time=round(first[a.motion].end_time, 6),
                                first_fail_reason=first[a.motion].fail_reason)
            if p.stats.get("found") and not a.success:  # the replay left the searched path
                a.search["replay_diverged"] = True
            found[a.motion] = a
    return [found[int(m)] for m in todo]


class Observer:
    """The tracker's observation of simulator states: MuJoCo state -> PARC quantities -> layout.

    States are in each motion's own coordinates, where the observation's reference and
    terrain live. Motion time follows PARC's model:
    float32 start time plus float32(control_dt) x steps since the reset. Target frames do
    not depend on the state, so they are looked up for `window` control steps at a time.
    """

    window = 8

    def __init__(self, name: str, character: Character, motions: list[BatchMotion], control_dt: float,
                 device: str = "cpu") -> None:
        import torch  # only trackers with an observation pay for torch

        from physrec.observations import observation_module
        from physrec.observations.parc import CharacterState
        self._torch, self._state = torch, CharacterState
        self.character, self.device = character, device
        self.layout = observation_module(name).Observation(
            character, [m.motion for m in motions], [m.terrain for m in motions], control_dt, device)

    def inference_mode(self) -> contextlib.AbstractContextManager:
        """torch's inference mode: a quarter less overhead per tensor operation; nothing in a
        recording needs gradients."""
        return self._torch.inference_mode()

    def start(self, motion: np.ndarray, fraction: float) -> None:
        """A new pass: environment e follows motion[e] from `fraction` of its length."""
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

    def _time(self, motion, steps):
        return self.layout.motion_time(motion, self.fraction, steps)

    def _lookup_targets(self, env: np.ndarray, step: int, count: int):
        """Target frames of `env` at steps step .. step+count-1, step-major: row column * len(env) + e."""
        torch = self._torch
        ids = self._motion_ids(env).repeat(count)
        steps = torch.arange(step, step + count, dtype=torch.int32, device=self.device).repeat_interleave(len(env))
        return self.layout.targets(ids, self._time(ids, steps))

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray, env: np.ndarray, step: int,
                 joint_rot: np.ndarray | None = None, body_pos: np.ndarray | None = None):
        """Observations [len(env), O] of the pass's environments `env` in states qpos, qvel, `step`
        control steps after reset; `joint_rot` [m, J, 4] and `body_pos` [m, B, 3] if the caller has them."""
        arrays = self.character.parc_state(qpos, qvel)
        arrays["contacts"] = contacts
        if joint_rot is not None and body_pos is not None:
            arrays["joint_rot"] = joint_rot
            arrays["key_pos"] = body_pos[:, self.layout.key_index]
        return self.observe(self._state.from_arrays(arrays, self.device), env, step)

    def observe(self, state, env: np.ndarray, step: int):
        """Observations of environments `env` in `state` (observations.parc.CharacterState on
        this observer's device), `step` control steps after reset."""
        torch = self._torch
        ids = self._motion_ids(env)
        targets, rows, col = self._targets.get(env, step)
        width = self._targets.width
        if len(rows) == width:  # every environment of the lookup, in its order: views, no gather
            targets = targets.rows(slice(col * width, (col + 1) * width))
        else:
            targets = targets.rows(torch.as_tensor(col * width + rows, device=self.device))
        return self.layout.compute(state, ids, None, targets)


def _record_envs(motions: list[BatchMotion], offsets: np.ndarray, boxes: np.ndarray, character: Character,
                 tracker: Tracker | Planner, settings: RecordSettings, backend: BackendSpec,
                 progress: Callable[[str], None], label: str, seed: int) -> tuple[list[Attempt], dict[str, Any]]:
    """Every pass over `motions`, one environment each, on one backend: (attempts, provenance)."""
    ref = build_reference(character, motions)
    observer = None
    if getattr(tracker, "observation", None):
        observer = Observer(tracker.observation, character, motions, 1.0 / settings.physics.control_hz,
                            tensor_device(backend))
    n = len(motions)
    pending = np.ones(n, dtype=bool)
    attempts: list[Attempt] = []
    fractions = (0.0,) + tuple(settings.start_fractions)
    no_autograd = contextlib.nullcontext() if observer is None else observer.inference_mode()
    ready_from = time.perf_counter()
    sim = make_backend(backend, character, settings.physics, n, boxes.shape[1])
    # On a GPU, compiling MuJoCo Warp's kernels (cached after the first job) can outlast the physics.
    progress(f"{label} {backend.name} ready with {n} environments in {time.perf_counter() - ready_from:.1f} s")
    pass_type: Callable[..., _Pass] = _Pass
    if hasattr(sim, "step_tensors"):  # a backend on a device: the control loop stays there
        from physrec.recording_device import DevicePass, DeviceTables
        pass_type = functools.partial(DevicePass, tables=DeviceTables(character, motions, sim.tensor_device))
        no_autograd = DevicePass.inference_mode()
    with contextlib.closing(sim), no_autograd:
        sim.set_terrain(np.arange(n), boxes)
        for p, fraction in enumerate(fractions):
            todo = np.flatnonzero(start_plan(ref.length, fraction, pending, settings.min_remaining))
            if len(todo) == 0:
                continue
            say = (f"{label} pass {p + 1}/{len(fractions)} (start {fraction:.0%}, "
                   f"{n - int(pending.sum())}/{n} motions recorded before it)")
            done = PassProgress(progress, say, len(todo))
            if is_planner(tracker):
                found = _planned_pass(tracker, sim, ref, settings, todo, fraction, offsets,  # type: ignore[arg-type]
                                      functools.partial(plan_request, ref, motions, boxes, character, settings,
                                                        backend, fraction, seed, progress, f"{label} pass {p + 1}"),
                                      done, lambda text, say=say: progress(f"{say}: {text}"))
            else:
                found = pass_type(sim, ref, settings, todo, fraction, offsets, observer).run(tracker, done)
            for a in found:
                attempts.append(a)
                if a.success:
                    pending[a.motion] = False
        return attempts, sim.provenance()


def plan_request(ref: ReferenceSet, motions: list[BatchMotion], boxes: np.ndarray, character: Character,
                 settings: RecordSettings, backend: BackendSpec, fraction: float, seed: int,
                 progress: Callable[[str], None], label: str, motion: np.ndarray) -> PlanRequest:
    """What a planner gets for the attempts of `motion` from `fraction`: simulators of the
    recorder's backend, opened on those motions' terrains."""
    slots = boxes.shape[1]

    def open_sim(rows: np.ndarray) -> SimBackend:
        sim = make_backend(backend, character, settings.physics, len(rows), slots)
        for r in np.unique(rows):
            env = np.flatnonzero(rows == r)
            sim.set_terrain(env, np.broadcast_to(boxes[motion[r]], (len(env),) + boxes.shape[1:]))
        return sim

    dt = 1.0 / settings.physics.control_hz
    t0 = fraction * ref.length[motion]
    length = ref.length[motion]
    return PlanRequest(
        reference=ref, motion=motion, names=[motions[i].name for i in motion], start_time=t0,
        steps=attempt_steps(length, t0, dt),
        required_steps=success_steps(length, t0, dt, settings.termination.end_tolerance),
        seeds=np.array([episode_seed(seed, motions[i].name, fraction) for i in motion]),
        termination=settings.termination, control_dt=dt, substeps=settings.physics.substeps, open_sim=open_sim,
        capacity=backend_capacity(backend, character, settings.physics, slots), progress=progress, label=label,
        threads=max(1, int(backend.threads)), terrain_boxes=boxes[motion])


def _release_device_memory() -> None:
    """torch keeps the blocks it freed for itself; after running out of GPU memory they go back
    to the device, so that Warp can allocate the smaller chunk's worlds."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here for it: a CPU job without torch has none
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def record_batch(motions: list[BatchMotion], character: Character, tracker: Tracker | Planner,
                 settings: RecordSettings, backend: BackendSpec = BackendSpec(),
                 progress: Callable[[str], None] = lambda s: None, batch: str = "", seed: int = 0) -> BatchRecording:
    """Track every motion of a batch; return all attempts in pass order.

    A backend with limited memory (the GPU) takes the batch in chunks that fit it, each chunk
    with every pass; a chunk that still runs out of memory is taken again in halves.
    """
    wall = time.perf_counter()
    tiled = tile_square([m.terrain for m in motions])
    boxes = batch_boxes(motions, settings.terrain_margin)
    n = len(motions)
    seconds = sum(m.motion.duration for m in motions)
    progress(f"[{batch}] work: {seconds:.1f} motion-seconds in the full-length pass ("
             f"{int(round(seconds * settings.physics.control_hz)) * settings.physics.substeps} physics steps in all), "
             f"{boxes.shape[1]} collision boxes per environment; later starts retry what fails")
    size = min(n, backend_capacity(backend, character, settings.physics, boxes.shape[1]) or n)
    if size < n:
        progress(f"[{batch}] {n} motions in chunks of {size} (what fits {backend.name} on {backend.device})")
    todo = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
    attempts: list[Attempt] = []
    provenance: dict[str, Any] = {}
    out_of_memory = False
    while todo:
        if out_of_memory:  # the failed chunk's tensors are unreachable now: give their memory back
            _release_device_memory()
            out_of_memory = False
        chunk = todo.pop(0)
        label = f"[{batch}]" if len(chunk) == n else f"[{batch}] motions {chunk[0] + 1}-{chunk[-1] + 1}/{n}"
        try:
            found, provenance = _record_envs([motions[i] for i in chunk], tiled.offsets[chunk], boxes[chunk],
                                             character, tracker, settings, backend, progress, label, seed)
        except BackendOutOfMemory as e:
            if len(chunk) == 1:
                raise
            progress(f"{label} {e}; taking these motions again in halves")
            todo[:0] = np.array_split(chunk, 2)
            out_of_memory = True
            continue
        except LimitExceeded as e:
            if backend.limit_scale >= MAX_LIMIT_SCALE:
                raise
            backend = dataclasses.replace(backend, limit_scale=2 * backend.limit_scale)
            progress(f"{label} {e}; recording these motions again with {backend.limit_scale}x the limits")
            todo.insert(0, chunk)
            continue
        for a in found:
            a.motion = int(chunk[a.motion])
        attempts += found
    succeeded = len({a.motion for a in attempts if a.success})
    sim_steps = sum(a.steps for a in attempts) * settings.physics.substeps + sum(
        int((a.search or {}).get("physics_steps", 0)) for a in attempts)  # a planner's search simulates too
    progress(f"[{batch}] finished: {succeeded}/{n} motions succeeded in {len(attempts)} attempts")
    return BatchRecording(motions, tiled, attempts, tracker.describe(), provenance,
                          time.perf_counter() - wall, sim_steps, int(boxes.shape[1]))
