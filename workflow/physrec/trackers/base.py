"""Tracking controllers: what drives the simulated character along its reference.

A tracker sees every active environment of a batch at once and returns absolute PD
targets in PARC's DOF coordinates (28 values, exponential map for 3-DoF joints); the
recorder clips them to the action bounds. It is offered the reference for the next H
control steps and may commit to targets for any number 1..H of them: a feedback policy
answers one step at a time, an open-loop tracker all H, which lets the simulator run H
steps in one call. Model-based and learned trackers plug in by implementing
:class:`Tracker` and registering in :data:`TRACKERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from physrec.motion.character import Character
from physrec.motion.reference import ReferenceSet


@dataclass(frozen=True)
class TrackingInput:
    """What a tracker may look at for N active environments at one control step."""

    qpos: np.ndarray  # [N, nq] MuJoCo state of each environment
    qvel: np.ndarray  # [N, nv]
    motion: np.ndarray  # [N] index into the reference set
    time: np.ndarray  # [N] current motion time, seconds
    control_dt: float
    ref_dof: np.ndarray  # [N, H, D] reference DOF (PARC coordinates) at time + k * control_dt, k = 1..H


class Tracker(Protocol):
    kind: str

    def describe(self) -> str:
        """One line of provenance written next to every recorded attempt."""
        ...

    def act(self, obs: TrackingInput) -> np.ndarray:
        """PD targets [N, h, D] for the next h control steps, 1 <= h <= H."""
        ...


class PDTracker:
    """Targets = the reference pose one control step ahead; no learning, no feedback.

    Stands a character for a few seconds and follows slow motions, fails on anything that
    needs balance: the baseline that shows what a learned tracker adds.
    """

    kind = "pd"

    def __init__(self, character: Character, reference: ReferenceSet) -> None:
        self.character = character
        self.reference = reference

    def describe(self) -> str:
        return "pd: PD targets = reference pose at t + control_dt"

    def act(self, obs: TrackingInput) -> np.ndarray:
        return obs.ref_dof  # open loop: the whole offered horizon at once


TRACKERS: dict[str, Callable[..., Tracker]] = {"pd": PDTracker}


def make_tracker(spec: dict, character: Character, reference: ReferenceSet) -> Tracker:
    kind = spec.get("kind")
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker kind {kind!r}; available: {', '.join(sorted(TRACKERS))}")
    return TRACKERS[kind](character, reference)
