"""The recorder's pass on the host: the tracker acts on numpy states, the backend steps them
(several control steps per call for open-loop trackers), and the termination check and
buffers are numpy, in float64. After each simulator call the recorder's own work
(kinematics, termination, buffers, observation) can run on the job's threads, the
environments in slices of at least MIN_SLICE_ROWS; every row's figures are computed alone, so
the slices record the bits of one call."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from physrec.motion import termination
from physrec.motion.reference import Lookahead, ReferenceSet
from physrec.observations.observer import Observer
from physrec.progress import PhaseTimes
from physrec.recording.data import Attempt
from physrec.recording.passes import Pass
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import SimBackend
from physrec.trackers.base import Plan, Tracker, TrackingInput

# Environments below which a control step's own work is not split further over threads. That
# work is mostly Python's cost per numpy and torch operation, under the GIL: measured 2026-12-08
# on this 2-core VM (load average about 5), one step costs about 0.9 ms plus 10 us per
# environment in one slice, and more in two on 2 threads at every size tried, 16 to 1024
# environments (1.6 against 2.6 ms at 64; docs/benchmarks.md, issue 24). So CPU batches (64)
# are never cut; only host batches of thousands would be.
MIN_SLICE_ROWS = 512


class HostPass(Pass):
    """A pass whose control loop runs on the host, for every backend; a planner's plans, if
    given, set where each attempt ends."""

    def __init__(self, sim: SimBackend, ref: ReferenceSet, settings: RecordSettings, motion: np.ndarray,
                 fraction: float | np.ndarray, offsets: np.ndarray, observer: Observer | None = None,
                 plans: list[Plan] | None = None, threads: int = 1) -> None:
        super().__init__(sim, ref, settings, motion, fraction, offsets, observer)
        self.threads = max(1, int(threads))  # the job's: a step's own work may run on them (_slices)
        self.times = PhaseTimes()  # where the control loop's time went
        # A planner's targets may stop short of the end: the attempt ends there, for its reason.
        self.cut = [""] * len(motion)
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

    def run(self, tracker: Tracker, on_finish: Callable[[int, bool], None]) -> list[Attempt]:
        pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        try:
            return self._run(tracker, on_finish, pool)
        finally:
            if pool is not None:
                pool.shutdown()

    def _slices(self, m: int) -> list[slice]:
        """The call's m environments in consecutive slices, one per thread, none under MIN_SLICE_ROWS."""
        k = max(1, min(self.threads, m // MIN_SLICE_ROWS))
        edges = np.linspace(0, m, k + 1).round().astype(np.int64)
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def _run(self, tracker: Tracker, on_finish: Callable[[int, bool], None],
             pool: ThreadPoolExecutor | None) -> list[Attempt]:
        ch, sim, n, K = self.ch, self.sim, len(self.motion), int(self.steps.max())
        horizon = min(self.settings.max_steps_per_call, tracker.max_horizon or self.settings.max_steps_per_call)
        self.horizon = horizon
        with_dof = self.observer is None or tracker.observation is None  # a replay beside a policy reads DOFs
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
        times, lap = self.times, time.perf_counter()
        while k < K and active.any():
            idx = np.flatnonzero(active)
            H = min(horizon, int(self.steps[idx].max()) - k)
            (ref_body, ref_root_rot, ref_dof), rows, col = reference.get(idx, k, H)
            ref_body, ref_root_rot = ref_body[rows, col:col + H], ref_root_rot[rows, col:col + H]
            ref_dof = None if ref_dof is None else ref_dof[rows, col:col + H]
            inp = TrackingInput(qpos_now[idx], qvel_now[idx], self.motion[idx], self.t0[idx] + k * self.dt, self.dt,
                                ref_dof, None if obs is None else obs[idx])
            lap = times.lap("reference", lap)
            targets = ch.recorded_targets(tracker.act(inp))
            h = targets.shape[1]
            bad = ~np.isfinite(targets).all(axis=(1, 2))  # a policy's NaN ends its attempt, not the batch
            targets[bad] = 0.0
            lap = times.lap("tracker", lap)
            out = sim.step(self.motion[idx], targets)
            lap = times.lap("physics", lap)
            m = len(idx)
            sight = None if obs is None else self.observer.prepare(idx, k + h, out.qpos[:, -1])
            window = slice(k + 1, k + 1 + h)

            def after_step(part: slice) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
                """The recorder's own work on rows `part` of the call's environments, on any thread:
                forward kinematics, termination check, buffers, observation. Each row's figures
                are its own (numpy's and, after `prepare`, the observation's), whatever the slices."""
                own, at = PhaseTimes(), time.perf_counter()
                env, qpos, qvel, contacts = idx[part], out.qpos[part], out.qvel[part], out.contacts[part]
                root_pos, root_rot, joint_rot = ch.qpos_to_pose(qpos)
                body_pos = ch.body_positions(root_pos, root_rot, joint_rot)  # [r, h, B, 3]
                r = len(env)
                chk = termination.check(
                    body_pos.reshape(r * h, -1, 3), root_rot.reshape(r * h, 4),
                    ref_body[part, :h].reshape(r * h, -1, 3), ref_root_rot[part, :h].reshape(r * h, 4),
                    self.settings.termination)
                at = own.lap("termination", at)
                Q[env, window], V[env, window], C[env, window] = qpos, qvel, contacts
                A[env, k:k + h], E[env, k:k + h] = targets[part], chk.errors.reshape(r, h, -1)
                qpos_now[env], qvel_now[env] = qpos[:, -1], qvel[:, -1]
                at = own.lap("bookkeeping", at)
                if sight is not None:
                    with self.observer.inference_mode():  # per thread, as torch's modes are
                        seen = self.observer.rows(sight, part, qpos[:, -1], qvel[:, -1], contacts[:, -1],
                                                  joint_rot[:, -1], body_pos[:, -1])
                        obs[env] = seen  # distinct rows per slice: no two threads write the same memory
                    if O is not None:
                        O[env, k + h] = seen.cpu().numpy()
                    own.lap("observation", at)
                return chk.code.reshape(r, h), chk.body.reshape(r, h), own.seconds

            slices = self._slices(m)
            parts = list(pool.map(after_step, slices) if pool and len(slices) > 1 else map(after_step, slices))
            code, body = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
            lap = times.spread(lap, [p[2] for p in parts])
            tick = getattr(on_finish, "tick", None)
            if tick is not None:
                tick(k + h, K, m, self.dt)
            code[bad, 0] = termination.BAD_ACTION
            done = (code != termination.OK) | (k + 1 + np.arange(h)[None, :] >= self.steps[idx, None])
            for j in np.flatnonzero(done.any(axis=1)):
                e, first = idx[j], int(np.argmax(done[j]))
                end[e] = k + 1 + first
                reasons[e] = termination.reason(int(code[j, first]), int(body[j, first]), ch.body_names) or self.cut[e]
                active[e] = False
                on_finish(e, self._success(e, int(end[e]), reasons[e]))
            k += h
            lap = times.lap("bookkeeping", lap)
        return [self._attempt(e, int(end[e]), reasons[e], Q, V, C, A, E, O) for e in range(n)]
