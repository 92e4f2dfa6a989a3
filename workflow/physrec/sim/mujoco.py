"""MuJoCo backend: one world (a batch's tiled terrain plus the character), many environments.

All environments of a batch share one compiled model: the terrain of every motion is in
it, side by side, and each environment's character is placed over its own motion's tile
through its initial state. A control step of every active environment is one call of
``mujoco.rollout`` (C++ threads across environments, no Python per physics step).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import rollout

from physrec.motion.character import Character
from physrec.sim.terrain_mjcf import terrain_geoms_xml

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass(frozen=True)
class PhysicsSettings:
    """Rates and solver settings; defaults follow PARC's Isaac Gym setup where MuJoCo allows."""

    control_hz: int = 30
    physics_hz: int = 120
    friction: float = 1.0
    integrator: str = "implicitfast"
    solver_iterations: int = 50

    @property
    def substeps(self) -> int:
        if self.physics_hz % self.control_hz:
            raise ValueError(f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})")
        return self.physics_hz // self.control_hz


def world_mjcf(character: Character, terrain_boxes: np.ndarray, settings: PhysicsSettings) -> str:
    """MJCF of the world: the character, terrain boxes, PD servos and one contact sensor per body."""
    root = ET.fromstring(character.mjcf)
    root.set("model", "physrec_world")
    for el in list(root.findall("option")):
        root.remove(el)
    option = ET.Element("option", {
        "timestep": repr(1.0 / settings.physics_hz), "integrator": settings.integrator,
        "iterations": str(settings.solver_iterations), "gravity": "0 0 -9.81"})
    root.insert(0, option)
    world = root.find("worldbody")
    assert world is not None
    geoms = ET.fromstring(f"<g>{terrain_geoms_xml(terrain_boxes, friction=settings.friction)}</g>")
    for i, g in enumerate(list(geoms)):
        world.insert(i, g)
    sensor = root.find("sensor")
    if sensor is None:
        sensor = ET.SubElement(root, "sensor")
    for name in character.body_names:
        ET.SubElement(sensor, "contact", {"name": f"contact_{name}", "body1": name, "data": "found", "num": "1"})
    return ET.tostring(root, encoding="unicode")


class MujocoBatchSim:
    """Steps many environments of one world in lockstep at the control rate."""

    def __init__(self, character: Character, terrain_boxes: np.ndarray, settings: PhysicsSettings,
                 threads: int = 1) -> None:
        self.character = character
        self.settings = settings
        self.model = mujoco.MjModel.from_xml_string(world_mjcf(character, terrain_boxes, settings))
        # MuJoCo uses the larger friction of two touching geoms: set it on all of them.
        self.model.geom_friction[:, 0] = settings.friction
        self.threads = max(1, int(threads))
        self._datas = [mujoco.MjData(self.model) for _ in range(self.threads)]
        self._rollout = rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
        self.nstate = mujoco.mj_stateSize(self.model, _STATE)
        self.nbody = character.num_bodies
        self._contact_adr = self.model.sensor_adr[-self.nbody:]

    def close(self) -> None:
        self._rollout.close()

    def __enter__(self) -> "MujocoBatchSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state layout: FULLPHYSICS = time, qpos, qvel, act, ... ----------------------------
    def qpos(self, state: np.ndarray) -> np.ndarray:
        return state[..., 1:1 + self.model.nq]

    def qvel(self, state: np.ndarray) -> np.ndarray:
        return state[..., 1 + self.model.nq:1 + self.model.nq + self.model.nv]

    def make_states(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial states [N, nstate] and their body contacts [N, B] (one forward pass per env)."""
        n = qpos.shape[0]
        states = np.zeros((n, self.nstate))
        contacts = np.zeros((n, self.nbody))
        d = self._datas[0]
        for e in range(n):
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = qpos[e]
            d.qvel[:] = qvel[e]
            mujoco.mj_forward(self.model, d)
            mujoco.mj_getState(self.model, d, states[e], _STATE)
            contacts[e] = d.sensordata[self._contact_adr] > 0
        return states, contacts

    def step(self, states: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H control steps of every given env in one call: targets [N, H, nu], each held over
        its physics substeps.

        Returns the state after each control step [N, H, nstate] and each body's contact
        flag during that step's last substep [N, H, B] (what a simulator's contact-force
        buffer holds after a step).
        """
        n, h = targets.shape[0], targets.shape[1]
        if n == 0:
            return np.zeros((0, h, self.nstate)), np.zeros((0, h, self.nbody), dtype=bool)
        sub = self.settings.substeps
        controls = np.repeat(targets, sub, axis=1)
        # Few large chunks: per-chunk dispatch costs more than the small imbalance between envs.
        out_state, out_sens = self._rollout.rollout(
            self.model, self._datas, states, controls, nstep=h * sub,
            initial_warmstart=np.zeros((n, self.model.nv)), chunk_size=max(1, n // (2 * self.threads)))
        last = slice(sub - 1, None, sub)
        return out_state[:, last], out_sens[:, last][..., self._contact_adr] > 0
