"""What the host and the device pass share: a pass's environments (one start fraction, or one
each for segment restarts), their start times and step counts, the reset onto the reference,
the success rule, and the episode writer that cuts an Attempt out of the pass's buffers."""

from __future__ import annotations

import numpy as np

from physrec.motion.reference import ReferenceSet, reference_state
from physrec.observations.observer import Observer
from physrec.recording.data import Attempt
from physrec.recording.settings import RecordSettings, attempt_steps
from physrec.sim.backend import SimBackend


class Pass:
    """Environments of one start fraction, stepped together until each ends: by run() of a
    subclass, HostPass on the host or DevicePass on the backend's device. `fraction` is one
    float (PARC's passes) or one per environment (record.recovery: segments restarts each
    failed attempt where it ended)."""

    def __init__(self, sim: SimBackend, ref: ReferenceSet, settings: RecordSettings, motion: np.ndarray,
                 fraction: float | np.ndarray, offsets: np.ndarray, observer: Observer | None = None) -> None:
        self.sim, self.ref, self.settings, self.observer = sim, ref, settings, observer
        self.offsets = offsets
        self.ch = ref.character
        self.dt = 1.0 / settings.physics.control_hz
        self.motion = motion
        self.fraction = fraction
        self.t0 = fraction * ref.length[motion]
        self.steps = attempt_steps(ref.length[motion], self.t0, self.dt)
        self.horizon = 1  # control steps per simulator call, set by run()

    def _reset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every environment on its reference at its start time: qpos, qvel, contacts."""
        qpos0, qvel0 = reference_state(self.ref, self.motion, self.t0)
        return qpos0, qvel0, self.sim.reset(self.motion, qpos0, qvel0)

    def _end_time(self, e: int, steps: int) -> float:
        return float(min(self.t0[e] + steps * self.dt, self.ref.length[self.motion[e]]))

    def _success(self, e: int, steps: int, reason: str) -> bool:
        length = self.ref.length[self.motion[e]]
        return not reason or self._end_time(e, steps) >= length - self.settings.termination.end_tolerance - 1e-9

    def _attempt(self, e: int, T: int, reason: str, Q, V, C, A, E, O) -> Attempt:
        """Environment e's episode of T control steps, cut out of the pass's buffers."""
        qpos = Q[e, :T + 1].copy()
        qpos[:, :2] += self.offsets[self.motion[e]]  # into the batch's tiled world
        return Attempt(
            motion=int(self.motion[e]), start_fraction=float(np.broadcast_to(self.fraction, self.motion.shape)[e]),
            start_time=float(self.t0[e]),
            end_time=self._end_time(e, T), success=bool(self._success(e, T, reason)), fail_reason=reason,
            actions=A[e, :T].astype(np.float32), qpos=qpos, qvel=V[e, :T + 1].copy(),
            contacts=C[e, :T + 1].copy(), errors=E[e, :T].astype(np.float32),
            ref_time=np.minimum(self.t0[e] + np.arange(T + 1) * self.dt, self.ref.length[self.motion[e]]),
            obs=None if O is None else O[e, :T + 1].copy(), steps_per_call=self.horizon)
