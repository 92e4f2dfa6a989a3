"""The tracker interface: what drives the simulated character along its reference.

A tracker sees every active environment of a batch at once and returns absolute PD
targets in PARC's DOF coordinates (28 values, exponential map for 3-DoF joints); the
recorder clips them to the action bounds and rounds them to float32, as they are stored.
Three kinds fit behind it:

- open-loop trackers (``pd``) read the reference only, and may commit to targets for the
  whole offered horizon of H control steps, which lets the simulator run H steps per call;
- policies (``parc``, ``exported``) read an observation (``observation`` names its layout,
  see :mod:`physrec.observations`) and answer one control step at a time;
- planners (``sampling``) search with the batch simulator itself before anything is
  recorded: they implement :class:`Planner`, receive a :class:`PlanRequest` (the attempts
  to plan, the reference, a way to open simulators on the motions' terrains) and return
  one :class:`Plan` of PD targets per attempt. The recorder then simulates those targets
  from the attempt's start like any open-loop tracker's, so what is written is what the
  recorder simulated, never a copy of the search's states.

A new kind implements :class:`Tracker` (or :class:`Planner`) and registers a factory in
:data:`TRACKERS`.
Factories import their own heavy dependencies (torch), so a ``pd`` job never loads them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from physrec.motion.character import Character


class TrackerError(ValueError):
    """A tracker that cannot be built (bad spec, missing or invalid model file)."""


@dataclass(frozen=True)
class TrackingInput:
    """What a tracker may look at for N active environments at one control step."""

    qpos: np.ndarray  # [N, nq] MuJoCo state of each environment
    qvel: np.ndarray  # [N, nv]
    motion: np.ndarray  # [N] index into the batch's motions
    time: np.ndarray  # [N] current motion time, seconds
    control_dt: float
    ref_dof: np.ndarray | None  # [N, H, D] reference DOF (PARC coordinates) at time + k * control_dt, k = 1..H;
    # None for trackers that read an observation (it holds the reference they see)
    obs: Any = None  # [N, O] torch tensor of the tracker's observation, for trackers that name one


class Tracker(Protocol):
    kind: str
    observation: str | None  # the observation layout it reads (physrec.observations), or None
    max_horizon: int | None  # control steps it can commit to per call; None: as many as offered

    def describe(self) -> str:
        """One line of provenance written next to every recorded attempt."""
        ...

    def act(self, inp: TrackingInput) -> np.ndarray:
        """PD targets [N, h, D] for the next h control steps, 1 <= h <= H."""
        ...


@dataclass
class PlanRequest:
    """Attempts of one recording pass for a planner: m motions, each from its start time."""

    reference: Any  # recording's ReferenceSet of the batch (each motion in its own frame)
    motion: np.ndarray  # [m] motion index in `reference`
    names: list[str]  # [m] motion names, for messages
    start_time: np.ndarray  # [m] seconds
    steps: np.ndarray  # [m] control steps from the start to the motion's end
    # [m] steps an attempt must live through: one that terminates after them, within the
    # end's tolerance, still succeeds (recording.settings.success_steps)
    required_steps: np.ndarray
    seeds: np.ndarray  # [m] per-attempt seed (run seed, motion, start): plans never depend on the batch
    termination: Any  # motion.termination.TerminationSettings
    control_dt: float
    substeps: int  # physics steps per control step
    # open_sim(rows): a backend whose environment e is on the terrain of motion[rows[e]];
    # the caller closes it. Its `step` holds targets over the substeps, as the recorder's does.
    open_sim: Callable[[np.ndarray], Any]
    capacity: int | None  # most environments one backend may hold (None: the host's memory, the CPU)
    progress: Callable[[str], None]
    label: str
    threads: int = 1  # host threads the job was given: a planner's own work may use them too
    # [m, slots, 6] each attempt's terrain boxes in its motion's frame (recording.batch_boxes), for
    # a planner's own CPU model of the world (the sampling search's inverse dynamics); None: unknown
    terrain_boxes: np.ndarray | None = None
    # [m] the first tracker's targets up to where it stopped (None where it did not run): a
    # planner rescuing a policy searches around them
    first_targets: list[np.ndarray | None] | None = None
    # first_act(row, step, qpos [n, nq], qvel [n, nv], contacts [n, B]): the rescued policy's targets
    # [n, D] on n states of attempt `row`, `step` control steps after its start, clipped and rounded
    # as the recorder's; None where the first tracker reads no observation
    first_act: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


@dataclass
class Plan:
    """A planner's answer for one attempt."""

    targets: np.ndarray  # [T, D] clipped PD targets from the start, held one control step each
    reason: str  # "" when the targets reach the motion's end; otherwise why the planner stopped
    stats: dict[str, Any]  # deterministic search statistics: written with the attempt


class Planner(Protocol):
    kind: str
    observation: None
    # The open-loop tracker the recorder runs first; only the attempts it fails are planned.
    first: Tracker | None
    # Control steps per simulator call when the plan is replayed: the planner simulated its
    # targets in calls of this length, and MuJoCo's solver warm start restarts at each call.
    replay_steps: int

    def describe(self) -> str: ...

    def plan(self, request: PlanRequest) -> list[Plan]: ...


def is_planner(tracker: Any) -> bool:
    return callable(getattr(tracker, "plan", None))


# kind -> "module:factory"; a factory takes (spec, character, device) and returns a Tracker.
TRACKERS: dict[str, str] = {
    "pd": "physrec.trackers.pd:make",
    "parc": "physrec.trackers.parc_policy:make",
    "exported": "physrec.trackers.exported:make",
    "sampling": "physrec.trackers.sampling:make",
}


# What takes over a learned tracker's failures (`tracker.rescue`): (policy, spec, character) -> Planner.
RESCUE = "physrec.trackers.sampling:rescuing"


def make_tracker(spec: dict, character: Character, device: str = "cpu") -> Tracker | Planner:
    kind = spec.get("kind")
    if kind not in TRACKERS:
        raise TrackerError(f"unknown tracker kind {kind!r}; available: {', '.join(sorted(TRACKERS))}")
    module, name = TRACKERS[kind].split(":")
    factory: Callable[..., Tracker | Planner] = getattr(importlib.import_module(module), name)
    rescue = spec.get("rescue")
    if rescue is None:
        return factory(spec, character, device)
    module, name = RESCUE.split(":")
    policy = factory({k: v for k, v in spec.items() if k != "rescue"}, character, device)
    return getattr(importlib.import_module(module), name)(policy, rescue, character)
