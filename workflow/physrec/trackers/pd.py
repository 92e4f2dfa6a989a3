"""``pd``: PD targets = the reference pose one control step ahead; no learning, no feedback.

Stands a character for a few seconds and follows slow motions, fails on anything that
needs balance: the baseline that shows what a learned tracker adds.
"""

from __future__ import annotations

import numpy as np

from physrec.motion.character import Character
from physrec.trackers.base import TrackingInput


class PDTracker:
    kind = "pd"
    observation = None
    max_horizon = None

    def describe(self) -> str:
        return "pd: PD targets = reference pose at t + control_dt"

    def act(self, inp: TrackingInput) -> np.ndarray:
        return inp.ref_dof  # open loop: the whole offered horizon at once


def make(spec: dict, character: Character, device: str = "cpu") -> PDTracker:
    return PDTracker()
