"""``sampling``: a tracker that needs no training. It searches PD-target offsets with the
simulator as its model, window by window, and keeps the best (after SAMCON: Liu, Yin,
van de Panne, Shao and Xu, SIGGRAPH 2010).

For each attempt, a beam of `kept` simulator states advances `window_steps` control steps
at a time. Every window, `samples` children are spread over the kept states; a child holds
one offset over the window, added to the nominal targets: the reference pose `target_lead`
control steps after the step starts, plus kd/kp x the reference's DOF velocity over the step
(the servo tracks velocity too), plus the joint torques inverse dynamics asks for along the
reference over kp (`feedforward`, trackers.feedforward; never a force on the root):

    offset = parent_weight x parent's offset + noise_rad x scale(body) x N(0, 1)

with one noise-free child per kept state. Each child is also simulated `lookahead_steps`
further with its offset held; its cost is the tracking cost over the window and the
look-ahead, plus `lookahead_termination_cost` per look-ahead step lost to a termination. A
child that terminates inside its window is dead; the `kept` cheapest survivors go on. The
look-ahead is what makes it work: without it no failing motion was ever tracked.

Rescuing a learned tracker (`tracker.rescue`), the nominal targets are the policy's: its
recorded targets up to where it fell (`nominal: recorded`), or, closed loop (`nominal:
policy`), the policy evaluated on each kept state at each window's start, its offset from the
reference's nominal targets held over the window and look-ahead of that state's children.
Once per window on the kept states, not per child per step: the children still run in one
simulator call per window (so the plan replays as the plain search's does), and the policy
sees `kept` rows per window instead of `samples` x `window_steps`. A restart searches the whole
attempt around the reference's nominal targets, as the search alone does: the policy's led
the search to die.

When the last window is done, the kept path with the least mean body position error is the
pass's path. `search_passes` independent passes (their own draws) keep the closest of their
paths; `refine_passes` then search around it. A pass after the first that dies or runs out of
budget leaves the path found standing.

When every child dies, the window is tried again with 2x, then 4x the samples and 1.5x the
noise (`window_retries`, `retry_noise_growth`); then the attempt starts over from its start
with the next seed (`restarts`); the recorder's later-start passes come after that. A
budget of physics steps per second of motion bounds the work on a motion that cannot be
tracked: it ends as a failure with its search statistics, never as a hang.

All attempts of a pass are searched together, one simulator call per window for all of
them, so the job's threads (or the GPU's worlds) are used fully. Every random draw comes
from the attempt's own generator (seeded by run seed, motion and start, plus the restart),
and each environment's physics is independent of the others', so a plan does not depend
on the batch, the thread count or the order of motions.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from physrec.motion import termination
from physrec.motion.character import Character
from physrec.motion.reference import reference_state
from physrec.trackers import feedforward
from physrec.trackers.base import Plan, PlanRequest, Tracker, TrackerError
from physrec.trackers.pd import PDTracker

# The defaults (config schema, $defs.sampling_tracker) are the spec measured on this
# project's simulator and termination rules (issue 7).
DEATH_NAMES = {termination.ROOT_POSITION: "root_position", termination.ROOT_ROTATION: "root_rotation",
               termination.BODY_OFFSET: "body_offset", termination.NON_FINITE_STATE: "non_finite_state"}
AUTO_CPU_SAMPLES = 512
# Sample-steps below which judging a window's children is not split over threads.
JUDGE_CHUNK_STATES = 512
MAX_AUTO_SAMPLES = 65536


@dataclass(frozen=True)
class SamplingSettings:
    samples: int | str  # children per window per attempt; "auto": sized from the GPU's memory
    kept: int
    window_steps: int
    lookahead_steps: int
    noise_rad: float
    parent_weight: float
    body_noise_scale: dict[str, float]  # per joint body; bodies not named: 1.0
    velocity_feedforward: bool
    lookahead_termination_cost: float
    window_retries: int
    retry_noise_growth: float
    restarts: int
    budget_steps_per_second: float  # physics steps per second of the attempt, all tries together
    cost_weights: dict[str, float]
    offset_excess_from: float  # body-offset ratio (error / termination limit) where that term starts
    pd_first: bool
    feedforward: str  # trackers.feedforward.MODES: joint torques of inverse dynamics as target offsets
    feedforward_scale: float
    target_lead: float  # nominal targets: the reference pose this many control steps after the step starts
    velocity_step: str  # the reference DOF velocity of the step ("current") or of the one after ("next")
    full_length: bool  # search to the motion's end, not only to where the end's tolerance makes it a success
    search_passes: int  # independent searches from the start; the path closest to the reference is kept
    refine_passes: int  # searches again around the path found, each seeded with the best path so far
    refine_noise_rad: float
    refine_smooth_steps: int
    refine_cost_weights: dict[str, float]
    policy_margin_s: float  # rescuing a policy: the search takes over this long before the policy failed
    nominal: str  # rescuing a policy: its recorded targets ("recorded") or the policy on the kept states ("policy")

    @classmethod
    def from_spec(cls, spec: dict) -> SamplingSettings:
        """The spec's values over the defaults, checked as the workflow checks them."""
        from physrec.config import ConfigError, tracker_spec
        try:
            full = tracker_spec({**spec, "kind": "sampling"})
        except ConfigError as e:
            raise TrackerError(str(e)) from None
        s = cls(**{k: v for k, v in full.items() if k != "kind"})
        if s.samples != "auto" and int(s.samples) < s.kept:
            raise TrackerError(f"tracker.samples ({s.samples}) must be at least tracker.kept ({s.kept})")
        return s


class SamplingPlanner:
    kind = "sampling"

    def __init__(self, settings: SamplingSettings, character: Character, rescues: Tracker | None = None) -> None:
        """`rescues`: a learned tracker that records first; the search takes over the attempts it
        fails, with its targets as the nominal ones (`tracker.rescue`)."""
        self.settings, self.ch, self.rescues = settings, character, rescues
        self.first = rescues if rescues is not None else PDTracker() if settings.pd_first else None
        # The recorder computes the first tracker's observation (and keeps it for every attempt).
        self.observation = getattr(rescues, "observation", None)
        self.replay_steps = settings.window_steps
        names = character.body_names
        unknown = sorted(set(settings.body_noise_scale) - set(names[1:]))
        if unknown:
            raise TrackerError(f"tracker.body_noise_scale: {', '.join(unknown)} not a joint body of the character "
                               f"({', '.join(names[1:])})")
        self.noise_scale = np.ones(character.num_dof)
        for j, s in enumerate(character.dof_slices):
            self.noise_scale[s] = settings.body_noise_scale.get(names[j + 1], 1.0)
        self.feedforward = np.where(character.kp > 0, character.kd / np.maximum(character.kp, 1e-12), 0.0)

    def use_threads(self, threads: int) -> None:
        """The rescued policy's rows on the job's threads, as the policy's own job runs them."""
        if hasattr(self.rescues, "use_threads"):
            self.rescues.use_threads(threads)  # type: ignore[union-attr]

    def describe(self) -> str:
        s = self.settings
        if self.rescues is not None:
            nominal = ("its recorded targets" if s.nominal == "recorded" else
                       "its targets on each kept state, once per window")
            first = (f"{self.rescues.describe()}; its failures searched from {s.policy_margin_s:g} s before they "
                     f"fail, {nominal} as the nominal ones: ")
        else:
            first = "pd first, then " if s.pd_first else ""
        return (f"sampling: {first}beam search over PD-target offsets, {s.samples} samples x {s.kept} kept per "
                f"{s.window_steps}-step window, {s.lookahead_steps}-step look-ahead, {s.restarts} restarts")

    def samples_for(self, request: PlanRequest, pending: int) -> int:
        s = self.settings
        if s.samples != "auto":
            return int(s.samples)
        if request.capacity is None:  # the CPU
            return AUTO_CPU_SAMPLES
        per_attempt = request.capacity // (max(1, pending) * 2 ** s.window_retries)
        return int(np.clip(per_attempt, max(s.kept, 64), MAX_AUTO_SAMPLES))

    def plan(self, request: PlanRequest) -> list[Plan]:
        s = self.settings
        m = len(request.motion)
        samples = self.samples_for(request, m)
        block = samples * 2 ** s.window_retries  # environments one attempt may use in one call
        # Attempts in groups that fit one backend (the GPU's memory; the CPU holds them all).
        group = m if request.capacity is None else max(1, request.capacity // block)
        plans: list[Plan] = []
        for g in range(0, m, group):
            rows = np.arange(g, min(m, g + group))
            plans += _GroupSearch(self, request, rows, samples, block).run()
        return plans


class _Attempt:
    """The search state of one attempt: its beam, its generator, its tries and its budget."""

    def __init__(self, planner: SamplingPlanner, request: PlanRequest, row: int, slot: int) -> None:
        s, ch, ref = planner.settings, planner.ch, request.reference
        self.planner, self.row, self.slot, self.seed = planner, row, slot, int(request.seeds[row])
        self.T = int(request.steps[row])
        self.need = int(request.required_steps[row])  # a termination after these is still a success
        self.budget = s.budget_steps_per_second * self.T * request.control_dt
        motion = np.full(self.T + s.window_steps + s.lookahead_steps + 1, request.motion[row])
        times = request.start_time[row] + np.arange(len(motion)) * request.control_dt
        pose = ref.pose(motion, times)
        vel = ref.velocity(motion, times)
        # Index j: the reference one control step after step j starts (times[j + 1]).
        if s.target_lead == 1.0:
            dof = ch.joint_rot_to_dof(pose.joint_rot)[1:]
        else:
            dof = ch.joint_rot_to_dof(ref.pose(motion, times + s.target_lead * request.control_dt).joint_rot)[:-1]
        dof_vel = vel.dof_vel[1:] if s.velocity_step == "next" else vel.dof_vel[:-1]
        self.nominal = dof + (planner.feedforward * dof_vel if s.velocity_feedforward else 0.0)
        self.base_nominal = self.nominal  # a refining pass's nominal targets are offsets of these
        self.ref_body = ref.body_pos(pose)[1:]
        self.ref_root_rot = pose.root_rot[1:]
        self.ref_root_vel = vel.root_lin_vel[1:]
        self.qpos0, self.qvel0 = reference_state(ref, motion[:1], times[:1])  # where the recorder resets
        # Rescuing a policy: its targets up to where it failed (the nominal there), and the steps
        # before `policy_margin_s` of that, whose windows are simulated with those targets alone.
        first = None if planner.rescues is None or request.first_targets is None else request.first_targets[row]
        self.first = None if first is None else np.asarray(first, dtype=np.float64)  # its steps: at most T
        margin = int(round(s.policy_margin_s / request.control_dt))
        self.fixed = 0 if self.first is None else max(0, len(self.first) - margin)
        self.policy_steps = 0  # of the path recorded: steps whose targets are the policy's own
        # `nominal: policy`: the searched windows' nominal targets come from the policy on each kept state
        self.act = request.first_act if self.first is not None and s.nominal == "policy" else None
        if self.first is not None and s.nominal == "policy" and self.act is None:
            raise TrackerError("tracker.rescue.nominal: policy needs a tracker that reads an observation")
        self.policy_states = 0  # states the policy was evaluated on
        self._motion, self._times = motion, times
        self.restart, self.sim_steps, self.windows, self.retried_windows = -1, 0, 0, 0
        self.refined, self.passes, self.refine_mode = 0, 1, False
        self.found: np.ndarray | None = None  # the path with the least mean body error so far, of a finished pass
        self.found_err = np.inf
        self.deaths: dict[str, int] = {}
        self.best: np.ndarray = np.zeros((0, ch.num_dof))  # longest targets any try reached
        self.done, self.reason = False, ""
        self._start_over()

    def add_feedforward(self, model: Any, request: PlanRequest) -> None:
        """Inverse dynamics' joint torques along the reference, as offsets of the nominal targets."""
        s = self.planner.settings
        if s.feedforward == "none":
            return
        ff = feedforward.target_offsets(s.feedforward, model, self.planner.ch, request.reference,
                                        self._motion[:-1], self._times[:-1], request.control_dt, s.feedforward_scale)
        self.nominal = self.base_nominal = self.nominal + ff

    def use_first_targets(self) -> None:
        """The rescued policy's targets replace the reference's where it has them."""
        self.ref_nominal = self.nominal  # what the policy's offsets are taken from (`nominal: policy`)
        if self.first is not None:
            self.nominal = self.nominal.copy()
            self.nominal[:len(self.first)] = self.first
            self.base_nominal = self.nominal

    def _start_over(self) -> None:
        self.restart += 1
        if self.restart:  # the search around the policy died: search all of it around the reference
            self.fixed, self.act = 0, None
            self.nominal = self.base_nominal = self.ref_nominal
        self._begin(np.random.SeedSequence([self.seed, self.restart]))

    def _begin(self, seeds: np.random.SeedSequence) -> None:
        self.rng = np.random.default_rng(seeds)
        self.k, self.retry = 0, 0
        self.searched_from = self.T  # this try's first step with searched targets
        self.qpos, self.qvel = self.qpos0.copy(), self.qvel0.copy()
        self.offset = np.zeros((1, self.planner.ch.num_dof))
        # `nominal: policy`, per kept state: the policy's targets on it minus the reference's nominal
        # ones at this window's first step, held over the window and its look-ahead (None: `nominal`)
        self.shift: np.ndarray | None = None
        self.contacts: np.ndarray | None = None  # per kept state, for the policy's observation (None: unknown)
        self.acc = np.zeros(1)  # per kept state: its path's summed mean body error
        self.history: list[tuple[np.ndarray, np.ndarray]] = []  # per window: parents [K], targets [K, w, D]

    @property
    def refining(self) -> bool:
        """A pass after one that found a path: if it dies or runs out of budget, that path stands."""
        return self.found is not None

    @property
    def weights(self) -> dict[str, float]:
        s = self.planner.settings
        return s.refine_cost_weights if self.refine_mode else s.cost_weights

    def searching(self) -> bool:
        """Whether this window is searched (not one of the rescued policy's own)."""
        return self.k + min(self.planner.settings.window_steps, self.T - self.k) > self.fixed or bool(self.retry)

    def wants_policy(self) -> bool:
        """`nominal: policy`: the policy is to be evaluated on the kept states (once per window: a
        retry keeps the states and their shift; a refining pass searches around its path)."""
        return self.act is not None and not self.refine_mode and not self.retry and self.searching()

    def use_policy(self, targets: np.ndarray) -> None:
        """The policy's targets [K, D] on the kept states, at this window's first step."""
        self.shift = targets - self.ref_nominal[self.k]
        self.policy_states += len(targets)

    def children(self, samples: int) -> tuple[np.ndarray, np.ndarray]:
        """(parent index [n], offset [n, D]) of this window's children."""
        s, K = self.planner.settings, len(self.qpos)
        if not self.searching():
            return np.arange(K), np.zeros((K, self.offset.shape[1]))  # the rescued policy's own targets
        self.searched_from = min(self.searched_from, self.k)
        n = samples * 2 ** self.retry
        parent = np.repeat(np.arange(K), np.diff(np.linspace(0, n, K + 1).round().astype(np.int64)))
        noise = self.rng.standard_normal((n, self.offset.shape[1]))
        first = np.r_[True, parent[1:] != parent[:-1]]  # the first child of each kept state is noise-free
        noise[first] = 0.0
        sigma = (s.refine_noise_rad if self.refine_mode else s.noise_rad) * s.retry_noise_growth ** self.retry
        return parent, s.parent_weight * self.offset[parent] + sigma * self.planner.noise_scale * noise

    def targets(self, parent: np.ndarray, offset: np.ndarray, horizon: int) -> np.ndarray:
        if self.shift is not None and self.searching():  # each kept state's policy targets, as offsets held
            nominal = self.ref_nominal[None, self.k:self.k + horizon] + self.shift[parent][:, None]
        else:
            nominal = self.nominal[None, self.k:self.k + horizon]
        return self.planner.ch.recorded_targets(nominal + offset[:, None])

    def trace(self, best: int) -> np.ndarray:
        """Targets from the start to the end of the last window, of kept state `best`."""
        parts = []
        for parent, targets in reversed(self.history):
            parts.append(targets[best])
            best = int(parent[best])
        return np.concatenate(parts[::-1]) if parts else np.zeros((0, self.offset.shape[1]))

    def advance(self, parent: np.ndarray, offset: np.ndarray, targets: np.ndarray, qpos: np.ndarray,
                qvel: np.ndarray, contacts: np.ndarray, code: np.ndarray, cost: np.ndarray, body_err: np.ndarray,
                steps_run: int) -> None:
        """Judge one window's children (their states, contacts, termination codes and costs after each step)."""
        s = self.planner.settings
        self.sim_steps += steps_run
        w = min(s.window_steps, self.T - self.k)
        la = s.lookahead_steps  # past the motion's end too, towards its last frame (the reference holds it)
        failed = code != termination.OK
        # A termination at step `need` or later is a success.
        dead = failed[:, :max(0, min(w, self.need - 1 - self.k))].any(axis=1)
        alive = np.flatnonzero(~dead)
        self.windows += 1
        if len(alive) == 0:
            first = code[np.arange(len(code)), np.argmax(failed[:, :w], axis=1)]  # each child's first termination
            for c, count in zip(*np.unique(first, return_counts=True)):
                name = DEATH_NAMES.get(int(c), str(int(c)))
                self.deaths[name] = self.deaths.get(name, 0) + int(count)
            self._extinct()
            return
        # Steps each child lived through, window and look-ahead together; every step lost to a
        # termination costs the same (in the window that is only possible in the end's tolerance).
        span = failed[:, :w + la]
        lived = np.where(span.any(axis=1), np.argmax(span, axis=1), w + la)
        step_cost = np.where(np.arange(w + la)[None] < lived[:, None], cost[:, :w + la], 0.0)
        total = step_cost.sum(axis=1) + s.lookahead_termination_cost * (w + la - lived)
        keep = alive[np.argsort(total[alive], kind="stable")[:s.kept]]
        self.history.append((parent[keep], targets[keep, :w]))
        self.qpos, self.qvel, self.contacts = qpos[keep, w - 1], qvel[keep, w - 1], contacts[keep, w - 1]
        self.offset = offset[keep]
        self.acc = self.acc[parent[keep]] + body_err[keep, :w].sum(axis=1)
        self.k += w
        if self.retry:
            self.retried_windows += 1
        self.retry = 0
        if self.k >= self.T or (self.k >= self.need and not s.full_length):
            best = int(np.argmin(self.acc))  # the kept path closest to the reference over its length
            self._finish_pass(self.trace(best), float(self.acc[best]) / self.k)
        elif self.sim_steps > self.budget:
            self._give_up("search_budget")

    def _finish_pass(self, path: np.ndarray, err: float) -> None:
        """A pass reached the end: keep its path if it is the closest yet, then refine it or stop."""
        if self.refine_mode:
            self.refined += 1
        if err < self.found_err:
            self.found, self.found_err, self.policy_steps = path, err, self.searched_from
        self._next_pass()

    def _next_pass(self) -> None:
        s = self.planner.settings
        if self.passes < s.search_passes and self.sim_steps <= self.budget:
            # Another search from the start with its own draws; the closest path of all is kept.
            self.passes += 1
            self._begin(np.random.SeedSequence([self.seed, self.restart, 1000 + self.passes]))
        elif self.refined < s.refine_passes and self.sim_steps <= self.budget:
            self.refine_mode = True
            # The next pass's nominal targets are this path (past its end, the reference's): its
            # noise-free children follow it exactly, the others search around it.
            assert self.found is not None
            n = len(self.found)
            dev = self.found - self.base_nominal[:n]
            if s.refine_smooth_steps > 1:  # the path's offsets averaged over time: its bias, not its jitter
                k = s.refine_smooth_steps
                padded = np.concatenate([np.repeat(dev[:1], k // 2, axis=0), dev,
                                         np.repeat(dev[-1:], k - 1 - k // 2, axis=0)])
                dev = np.stack([padded[i:i + n] for i in range(k)]).mean(axis=0)
            self.nominal = np.concatenate([self.base_nominal[:n] + dev, self.base_nominal[n:]])
            self._begin(np.random.SeedSequence([self.seed, self.restart, self.refined + 1]))
        else:
            self._stop_refining()

    def _stop_refining(self) -> None:
        self.best, self.done = self.found, True

    def _extinct(self) -> None:
        s = self.planner.settings
        if self.retry < s.window_retries:
            self.retry += 1
        elif self.refining:  # a later pass that dies: the path found stands
            if self.refine_mode:
                self.refined += 1
            self._next_pass()
            return
        elif self.restart < s.restarts:
            self._keep_best()
            self._start_over()
        else:
            self._give_up("search_exhausted")
        if not self.done and self.sim_steps > self.budget:
            self._give_up("search_budget")

    def _keep_best(self) -> None:
        reached = self.trace(0)
        if len(reached) > len(self.best):
            self.best, self.policy_steps = reached, min(self.searched_from, len(reached))

    def _give_up(self, reason: str) -> None:
        if self.refining:  # out of budget while refining: the path found stands
            self._stop_refining()
            return
        self._keep_best()
        self.done, self.reason = True, reason

    def stats(self, request: PlanRequest) -> dict[str, Any]:
        dt = request.control_dt
        seconds = max(self.T * dt, dt)
        return {"method": "search", "found": not self.reason, "restarts": self.restart,
                "windows": self.windows, "retried_windows": self.retried_windows,
                "searched_to_s": round(float(request.start_time[self.row] + len(self.best) * dt), 6),
                "physics_steps": int(self.sim_steps),
                "physics_steps_per_motion_second": round(self.sim_steps / seconds),
                **({"policy_steps": int(self.policy_steps), "nominal": self.planner.settings.nominal}
                   if self.first is not None else {}),
                **({"policy_states": int(self.policy_states)}
                   if self.first is not None and self.planner.settings.nominal == "policy" else {}),
                **({"search_passes": self.passes, "refine_passes": self.refined,
                    "searched_mean_body_pos_error": round(float(self.found_err), 6)} if self.found is not None else {}),
                "sample_terminations": dict(sorted(self.deaths.items()))}


class _GroupSearch:
    """Attempts searched together: one simulator call per window for all of them."""

    def __init__(self, planner: SamplingPlanner, request: PlanRequest, rows: np.ndarray, samples: int,
                 block: int) -> None:
        self.planner, self.request, self.samples, self.block = planner, request, samples, block
        self.attempts = [_Attempt(planner, request, int(r), i) for i, r in enumerate(rows)]

    def run(self) -> list[Plan]:
        req, s = self.request, self.planner.settings
        wall, cpu = time.perf_counter(), time.process_time()
        horizon_max = s.window_steps + s.lookahead_steps
        sim = req.open_sim(np.repeat([a.row for a in self.attempts], self.block))
        if s.feedforward != "none":
            rows = [a.row for a in self.attempts]
            boxes = None if req.terrain_boxes is None else req.terrain_boxes[rows]
            models = feedforward.world_models(self.planner.ch, boxes, len(rows), req.control_dt, req.substeps)
            for a, model in zip(self.attempts, models):
                a.add_feedforward(model, req)
        for a in self.attempts:
            a.use_first_targets()
        # The judge (kinematics, termination, cost) runs on the host whatever the backend: with
        # many threads (or the GPU) stepping, one thread judging would hold the search back.
        self.pool = ThreadPoolExecutor(req.threads) if req.threads > 1 else None
        last_say = time.perf_counter()
        try:
            while True:
                todo = [a for a in self.attempts if not a.done]
                if not todo:
                    break
                H = horizon_max
                parts = []
                for a in todo:
                    if a.wants_policy():
                        self._policy_on_kept(sim, a)
                    parent, offset = a.children(self.samples)
                    env = a.slot * self.block + np.arange(len(parent))
                    parts.append((a, parent, offset, env, a.targets(parent, offset, H), a.qpos[parent], a.qvel[parent]))
                env = np.concatenate([p[3] for p in parts])
                sim.reset(env, np.concatenate([p[5] for p in parts]), np.concatenate([p[6] for p in parts]),
                          contacts=False)
                out = sim.step(env, np.concatenate([p[4] for p in parts]))
                cut = np.cumsum([0] + [len(p[1]) for p in parts])
                judged = self._judge([(a, cut[i], cut[i + 1]) for i, (a, *_) in enumerate(parts)], out, H)
                for i, (a, parent, offset, _, targets, _, _) in enumerate(parts):
                    rows = slice(cut[i], cut[i + 1])
                    a.advance(parent, offset, targets, out.qpos[rows], out.qvel[rows], out.contacts[rows], *judged[i],
                              len(parent) * H * req.substeps)
                if time.perf_counter() - last_say > 10.0:
                    last_say = time.perf_counter()
                    req.progress(f"{req.label} search: " + ", ".join(
                        f"{req.names[a.row]} {'done' if a.done else f'{a.k / max(a.T, 1):.0%}'}"
                        + (f" (restart {a.restart})" if a.restart else "") for a in self.attempts))
        finally:
            sim.close()
            if self.pool:
                self.pool.shutdown()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total_steps = max(1, sum(a.sim_steps for a in self.attempts))
        plans = []
        for a in self.attempts:
            stats = a.stats(req)
            seconds = max(a.T * req.control_dt, req.control_dt)
            share = a.sim_steps / total_steps  # this attempt's part of the group's compute
            outcome = "found" if not a.reason else f"{a.reason} at {stats['searched_to_s']:.2f} s"
            req.progress(f"{req.label} {req.names[a.row]}: search {outcome}, {a.restart} restart(s), "
                         f"{stats['physics_steps']:,} physics steps, ~{share * cpu / seconds:.1f} CPU-s and "
                         f"~{share * wall / seconds:.1f} s wall per motion-second")
            plans.append(Plan(a.best, a.reason, stats))
        return plans

    def _policy_on_kept(self, sim: Any, a: _Attempt) -> None:
        """`nominal: policy`: the rescued policy on the attempt's kept states, one row each (a try's
        first state, the reset, gets its contacts from the simulator, as the recorder's reset does)."""
        contacts = a.contacts
        if contacts is None:
            contacts = sim.reset(a.slot * self.block + np.arange(len(a.qpos)), a.qpos, a.qvel)
        assert a.act is not None
        a.use_policy(a.act(a.row, a.k, a.qpos, a.qvel, contacts))

    def _judge(self, parts: list[tuple[_Attempt, int, int]], out: Any, H: int
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Termination codes and tracking costs [n, H] after each of the call's steps, for each
        attempt's children (rows start:end of `out`). Judged in chunks of children on the
        job's threads: numpy releases the GIL, and each child's figures are computed alone,
        so they do not depend on the chunks."""
        tasks, pieces = [], []  # tasks (attempt, start, end) in order of parts; pieces per part
        for a, start, end in parts:
            k = max(1, min(self.request.threads, (end - start) * H // JUDGE_CHUNK_STATES))
            edges = np.linspace(start, end, k + 1).round().astype(np.int64)
            tasks += [(a, int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]
            pieces.append(k)

        def judge(task: tuple[_Attempt, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            a, lo, hi = task
            return self._judge_rows(a, out.qpos[lo:hi], out.qvel[lo:hi], H)

        done = iter(list(self.pool.map(judge, tasks) if self.pool and len(tasks) > 1 else map(judge, tasks)))
        judged = []
        for k in pieces:
            codes, costs, errs = zip(*(next(done) for _ in range(k)))
            judged.append((np.concatenate(codes), np.concatenate(costs), np.concatenate(errs)))
        return judged

    def _judge_rows(self, a: _Attempt, qpos: np.ndarray, qvel: np.ndarray, h: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ch, s, req = self.planner.ch, self.planner.settings, self.request
        n = len(qpos)
        root_pos, root_rot, joint_rot = ch.qpos_to_pose(qpos[:, :h])
        body = ch.body_positions(root_pos, root_rot, joint_rot)  # [n, h, B, 3]
        ref_body = np.broadcast_to(a.ref_body[a.k:a.k + h], body.shape)
        ref_rot = np.broadcast_to(a.ref_root_rot[a.k:a.k + h], root_rot.shape)
        chk = termination.check(body.reshape(n * h, -1, 3), root_rot.reshape(n * h, 4),
                                ref_body.reshape(n * h, -1, 3), ref_rot.reshape(n * h, 4), req.termination)
        w = a.weights
        err = chk.errors.reshape(n, h, -1)
        ratio = chk.body_ratio.reshape(n, h, -1)
        offset_err = ratio * np.asarray(req.termination.body_offset_limits)
        root_vel = qvel[:, :h, :3]  # free joint: world-frame linear velocity
        cost = (w["root_pos"] * err[..., 0] + w["root_rot"] * err[..., 1]
                + w["body_offset"] * offset_err.mean(axis=-1)
                + w["offset_excess"] * (np.maximum(0.0, ratio - s.offset_excess_from) ** 2).sum(axis=-1)
                + w["body_pos"] * err[..., 3]
                + w["root_vel"] * np.linalg.norm(root_vel - a.ref_root_vel[a.k:a.k + h], axis=-1)
                + w["root_height"] * np.abs(body[..., 0, 2] - ref_body[..., 0, 2]))
        return chk.code.reshape(n, h), cost, err[..., 3]


def make(spec: dict, character: Character, device: str = "cpu") -> SamplingPlanner:
    return SamplingPlanner(SamplingSettings.from_spec(spec), character)


def rescuing(policy: Tracker, spec: dict, character: Character) -> SamplingPlanner:
    """`policy` records first; the search (`spec`, a sampling tracker's keys) rescues what it fails."""
    return SamplingPlanner(SamplingSettings.from_spec({k: v for k, v in spec.items() if k != "kind"}), character,
                           policy)
