"""The simulator interface the recorder drives, and the registry of its implementations.

A backend holds `num_envs` environments. Each has its own terrain (box rows in the
environment's own frame, see sim.world) and its own state, and is stepped at the control
rate with PD targets held over the physics substeps. It knows nothing of motions, trackers
or termination: the recorder decides which environment runs what, and resets a finished
environment to reuse it for the next attempt or motion.

A backend on a device (MuJoCo Warp) also has `tensor_device` (the torch device its arrays
live on) and `step_tensors` (step with torch tensors in and out, no host copy) and
`check_overflow`; the recorder then keeps its control loop there (recording.device_pass).

Another engine (for example Isaac Gym) plugs in by implementing `SimBackend` and adding
its module to BACKENDS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from physrec.motion.character import Character
from physrec.sim.world import PhysicsSettings

BACKENDS = {"mujoco": "physrec.sim.mujoco:MujocoBackend",
            "mujoco_warp": "physrec.sim.mujoco_warp:WarpBackend"}


class BackendError(RuntimeError):
    """A backend cannot run here (missing package or device) or was asked for too much."""


class BackendOutOfMemory(BackendError):
    """The device could not hold this many environments: the recorder retries with fewer."""


class LimitExceeded(BackendError):
    """A preallocated buffer overflowed in some environments, so the call's results are
    invalid: the recorder runs them again with BackendSpec.limit_scale doubled."""

    def __init__(self, message: str, limits: tuple[str, ...], envs: np.ndarray) -> None:
        super().__init__(message)
        self.limits, self.envs = limits, envs


@dataclass(frozen=True)
class BackendSpec:
    name: str = "mujoco"
    device: str = "cpu"  # mujoco_warp: "cuda:N" or "cpu" (Warp's CPU device)
    threads: int = 1  # mujoco: rollout threads
    # mujoco_warp: MuJoCo Warp's deterministic execution (contact order, constraint rows,
    # atomic sums), so that a rerun on the same GPU model is byte-identical
    deterministic: bool = False
    # Multiplier of preallocated buffers (mujoco_warp: contacts and constraint rows per
    # world); the recorder doubles it when a backend raises LimitExceeded.
    limit_scale: int = 1


@dataclass
class Steps:
    """What H control steps of m environments produced, after each control step."""

    qpos: np.ndarray  # [m, H, nq] float64
    qvel: np.ndarray  # [m, H, nv] float64
    contacts: np.ndarray  # [m, H, B] bool: body in contact during the step's last substep


class SimBackend(Protocol):
    name: str
    num_envs: int
    terrain_slots: int

    def set_terrain(self, env: np.ndarray, boxes: np.ndarray) -> None:
        """Give environments `env` [m] the terrains `boxes` [m, terrain_slots, 6] (sim.world.pad_boxes)."""

    def reset(self, env: np.ndarray, qpos: np.ndarray, qvel: np.ndarray, contacts: bool = True) -> np.ndarray | None:
        """Set environments to qpos [m, nq], qvel [m, nv] at rest of history (no warm start);
        return each body's contact flag [m, B] in that state, or None with `contacts=False`
        (a search resets thousands of samples per window and needs no contacts)."""

    def step(self, env: np.ndarray, targets: np.ndarray) -> Steps:
        """Advance environments `env` [m] by H control steps, targets [m, H, nu]; the others keep their state."""

    def memory(self) -> dict[str, int]:
        """Bytes held, by kind (for example host, device, per_env)."""

    def provenance(self) -> dict[str, Any]:
        """Engine, versions and device: written into every recording's env_kwargs."""

    def close(self) -> None:
        """Free threads and device memory."""


def _module(spec: BackendSpec) -> tuple[Any, str]:
    if spec.name not in BACKENDS:
        raise BackendError(f"unknown backend {spec.name!r}; known: {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[spec.name].split(":")
    return importlib.import_module(module), cls


def backend_capacity(spec: BackendSpec, character: Character, settings: PhysicsSettings,
                     terrain_slots: int) -> int | None:
    """Most environments one backend instance can hold (None: no limit but the host's memory).
    A backend module with a device of limited memory defines `capacity(...)` with these arguments."""
    module, _ = _module(spec)
    capacity = getattr(module, "capacity", None)
    return None if capacity is None else int(capacity(spec, character, settings, terrain_slots))


def tensor_device(spec: BackendSpec) -> str:
    """Where the recorder's torch tensors (observation, policy) live: the backend's GPU, or
    the CPU. A backend module on a device defines `tensor_device(spec)`."""
    module, _ = _module(spec)
    resolve = getattr(module, "tensor_device", None)
    return "cpu" if resolve is None else str(resolve(spec))


def make_backend(spec: BackendSpec, character: Character, settings: PhysicsSettings, num_envs: int,
                 terrain_slots: int) -> SimBackend:
    module, cls = _module(spec)
    return getattr(module, cls)(spec, character, settings, num_envs, terrain_slots)
