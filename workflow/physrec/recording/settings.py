"""What a recording is set up by: RecordSettings (built by config.record_settings) and the step
counts they imply. Nothing else of the recorder is imported here, so the config can build
settings without loading the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physrec.motion import termination
from physrec.sim.world import PhysicsSettings


@dataclass(frozen=True)
class RecordSettings:
    physics: PhysicsSettings = field(default_factory=PhysicsSettings)
    termination: termination.TerminationSettings = field(default_factory=termination.TerminationSettings)
    start_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    min_remaining: float = 2.0  # seconds a later start must leave
    # What a failed attempt is retried from: "parc", PARC's later start fractions (above); or
    # "segments", each failed attempt restarted where it ended, at most max_restarts times, while
    # at least min_segment seconds of its motion are left (stages/segments.py keeps the pieces).
    recovery: str = "parc"
    min_segment: float = 1.0
    max_restarts: int = 16
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
    def pass_fractions(self) -> tuple[float, ...]:
        """The start fraction of each pass: the full-length pass, then the later starts."""
        return (0.0,) + tuple(self.start_fractions)

    @property
    def passes(self) -> int:
        """Passes at most: the full-length pass, then PARC's later starts or the segment restarts."""
        return len(self.pass_fractions) if self.recovery == "parc" else 1 + self.max_restarts

    @property
    def max_episode_steps(self) -> int:
        """attempt_steps of the longest motion from its start: no attempt has more (the step count
        only grows with the time left, also in floating point)."""
        return int(attempt_steps(np.array([self.max_duration]), np.zeros(1), 1.0 / self.physics.control_hz)[0])


def attempt_steps(length: np.ndarray, t0: np.ndarray, dt: float) -> np.ndarray:
    """Control steps from start times t0 to the motions' ends (at least one)."""
    return np.maximum(1, np.ceil((length - t0) / dt - 1e-6).astype(np.int64))


def success_steps(length: np.ndarray, t0: np.ndarray, dt: float, end_tolerance: float) -> np.ndarray:
    """Fewest control steps after which an attempt that terminates still succeeded: it
    ended within end_tolerance of its motion's end (the rule of recording.passes.Pass._success)."""
    full = attempt_steps(length, t0, dt)
    return np.minimum(full, np.maximum(1, np.ceil((length - end_tolerance - t0) / dt - 1e-6).astype(np.int64)))

