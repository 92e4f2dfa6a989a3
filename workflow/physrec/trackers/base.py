"""The tracker interface: what drives the simulated character along its reference.

A tracker sees every active environment of a batch at once and returns absolute PD
targets in PARC's DOF coordinates (28 values, exponential map for 3-DoF joints); the
recorder clips them to the action bounds. Three kinds fit behind it:

- open-loop trackers (``pd``) read the reference only, and may commit to targets for the
  whole offered horizon of H control steps, which lets the simulator run H steps per call;
- policies (``parc``, ``exported``) read an observation (``observation`` names its layout,
  see :mod:`physrec.observations`) and answer one control step at a time;
- planners that search with the simulator (a later issue).

A new kind implements :class:`Tracker` and registers a factory in :data:`TRACKERS`.
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


# kind -> "module:factory"; a factory takes (spec, character, device) and returns a Tracker.
TRACKERS: dict[str, str] = {
    "pd": "physrec.trackers.pd:make",
    "parc": "physrec.trackers.parc_policy:make",
    "exported": "physrec.trackers.exported:make",
}


def make_tracker(spec: dict, character: Character, device: str = "cpu") -> Tracker:
    kind = spec.get("kind")
    if kind not in TRACKERS:
        raise TrackerError(f"unknown tracker kind {kind!r}; available: {', '.join(sorted(TRACKERS))}")
    module, name = TRACKERS[kind].split(":")
    factory: Callable[..., Tracker] = getattr(importlib.import_module(module), name)
    return factory(spec, character, device)
