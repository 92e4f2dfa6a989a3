"""A planner's pass: its open-loop tracker first, then a plan for each attempt that one failed,
replayed by the host pass; and what a planner is given to plan with."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from physrec.motion.character import Character
from physrec.motion.reference import ReferenceSet
from physrec.observations.observer import Observer
from physrec.recording.data import Attempt, BatchMotion
from physrec.recording.host_pass import HostPass
from physrec.recording.plan import episode_seed
from physrec.recording.settings import RecordSettings, attempt_steps, success_steps
from physrec.sim.backend import BackendSpec, SimBackend, backend_capacity, make_backend
from physrec.trackers.base import Plan, Planner, PlanRequest, Tracker, TrackingInput


class PlanReplay:
    """An open-loop tracker that plays back a planner's targets, one plan per environment of
    a pass, in simulator calls of the planner's length (see trackers.base.Planner)."""

    kind = "replay"
    observation = None

    def __init__(self, planner: Planner, plans: list[Plan], run: HostPass) -> None:
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


def planned_pass(planner: Planner, sim: SimBackend, ref: ReferenceSet, settings: RecordSettings,
                 todo: np.ndarray, fraction: float | np.ndarray, offsets: np.ndarray,
                 request: Callable[..., PlanRequest], progress: Callable[[int, bool], None],
                 say: Callable[[str], None], observer: Observer | None = None) -> list[Attempt]:
    """One pass of a planner: its first tracker (pd, or the policy it rescues), then a plan for
    each attempt that one failed, replayed by the recorder; the attempts in `todo` order.
    `fraction`: one, or one per motion of `todo`."""
    found: dict[int, Attempt] = {}
    first: dict[int, Attempt] = {}
    if planner.first is not None:
        for a in HostPass(sim, ref, settings, todo, fraction, offsets, observer).run(planner.first,
                                                                                    lambda e, ok: None):
            first[a.motion] = a
            if a.success:
                a.search = {"method": planner.first.kind}
                found[a.motion] = a
                progress(0, True)
        say(f"{planner.first.kind} recorded {len(found)}/{len(todo)}; searching {len(todo) - len(found)}")
    left = np.array([m not in found for m in todo], dtype=bool)
    rest = todo[left]
    if len(rest):
        part = fraction if np.ndim(fraction) == 0 else np.asarray(fraction)[left]
        req = request(rest, part)
        if first:
            req = dataclasses.replace(req, first_targets=[first[int(m)].actions if int(m) in first else None
                                                          for m in rest])
        if observer is not None and planner.first is not None and planner.first.observation:
            act = policy_on_states(planner.first, observer, ref, rest, part, req.control_dt)
            req = dataclasses.replace(req, first_act=act)
        plans = planner.plan(req)
        run = HostPass(sim, ref, settings, rest, part, offsets, observer, plans=plans)
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


def policy_on_states(policy: Tracker, observer: Observer, ref: ReferenceSet, motion: np.ndarray,
                     fraction: float | np.ndarray, control_dt: float
                     ) -> Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """PlanRequest.first_act for the attempts of `motion` from `fraction`: the policy's targets on
    any states of one attempt, observed as the recorder observes its own (the observer starts
    on these attempts here; the replay's pass starts it again)."""
    observer.start(motion, fraction)
    t0 = np.broadcast_to(fraction, motion.shape) * ref.length[motion]

    def act(row: int, step: int, qpos: np.ndarray, qvel: np.ndarray, contacts: np.ndarray) -> np.ndarray:
        env = np.full(len(qpos), row)
        obs = observer(qpos, qvel, contacts, env, step)
        inp = TrackingInput(qpos, qvel, motion[env], t0[env] + step * control_dt, control_dt, None, obs)
        return ref.character.recorded_targets(policy.act(inp)[:, 0])

    return act


def plan_request(ref: ReferenceSet, motions: list[BatchMotion], boxes: np.ndarray, character: Character,
                 settings: RecordSettings, backend: BackendSpec, seed: int, progress: Callable[[str], None],
                 label: str, motion: np.ndarray, fraction: float | np.ndarray) -> PlanRequest:
    """What a planner gets for the attempts of `motion` from `fraction` (one, or one per motion):
    simulators of the recorder's backend, opened on those motions' terrains."""
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
        seeds=np.array([episode_seed(seed, motions[i].name, float(f))
                        for i, f in zip(motion, np.broadcast_to(fraction, motion.shape))]),
        termination=settings.termination, control_dt=dt, substeps=settings.physics.substeps, open_sim=open_sim,
        capacity=backend_capacity(backend, character, settings.physics, slots), progress=progress, label=label,
        threads=max(1, int(backend.threads)), terrain_boxes=boxes[motion])
