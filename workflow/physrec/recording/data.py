"""The data of a recording: a batch's motions going in, its attempts and the batch's recording
coming out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from physrec.formats.motion_file import MotionData
from physrec.motion.terrain import Heightfield, TiledTerrain, solid_boxes


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
    pass_index: int = 0  # the recorder's pass that ran it (0: the full-length pass)

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
    # Wall seconds by what the control loop did (physics, tracker, observation, termination, ...,
    # writing: handing attempts on): progress.PhaseTimes of the host passes
    seconds: dict[str, float] = field(default_factory=dict)

    def world_boxes(self) -> np.ndarray:
        """The tiled world as boxes, for the terrain mesh of PARC's terrain file: drawn, never
        simulated, and at GPU batch sizes tens of millions of cells (4096 PARC terrains)."""
        return solid_boxes(self.tiled.world, fast=True)
