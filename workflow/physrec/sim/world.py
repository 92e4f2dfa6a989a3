"""The simulated world of one environment: the character, PD servos, contact sensors and a
fixed number of terrain box slots that each environment fills with its own motion's terrain.

Every environment of a batch compiles to the same model sizes, so one model can be copied
per environment (CPU) or batched per world (MuJoCo Warp) and only the terrain geoms'
positions and sizes differ. Slots a terrain does not need are parked as tiny boxes deep
inside its first box, where no body can reach them and its bounding volumes stay compact.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import mujoco
import numpy as np

from physrec.motion.character import Character
from physrec.sim.terrain_mjcf import terrain_geoms_xml

PARKED_HALF = 0.005  # half size of a parked slot's cube
# A parked slot in the compiled model, before any terrain is set: a 1 cm cube 1 km down.
PARKED_BOX = np.array([0.0, 0.0, -1000.0, PARKED_HALF, PARKED_HALF, PARKED_HALF])
TERRAIN_PREFIX = "terrain"


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


def world_mjcf(character: Character, terrain_slots: int, settings: PhysicsSettings) -> str:
    """MJCF of the world: `terrain_slots` parked terrain boxes first in the worldbody (geom ids
    0 .. slots-1), the character, PD servos and one contact sensor per body (the last sensors)."""
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
    parked = np.tile(PARKED_BOX, (max(1, terrain_slots), 1))
    xml = terrain_geoms_xml(parked, friction=settings.friction, name_prefix=TERRAIN_PREFIX)
    for i, g in enumerate(ET.fromstring(f"<g>{xml}</g>")):
        world.insert(i, g)
    sensor = root.find("sensor")
    if sensor is None:
        sensor = ET.SubElement(root, "sensor")
    for name in character.body_names:
        ET.SubElement(sensor, "contact", {"name": f"contact_{name}", "body1": name, "data": "found", "num": "1"})
    return ET.tostring(root, encoding="unicode")


def compile_world(character: Character, terrain_slots: int, settings: PhysicsSettings) -> mujoco.MjModel:
    """The compiled world every backend starts from."""
    model = mujoco.MjModel.from_xml_string(world_mjcf(character, terrain_slots, settings))
    # MuJoCo uses the larger friction of two touching geoms: set it on all of them.
    model.geom_friction[:, 0] = settings.friction
    return model


def pad_boxes(terrains: list[np.ndarray], slots: int | None = None) -> np.ndarray:
    """Box rows of every terrain padded to the largest count, or to `slots`: [N, slots, 6]. A
    parked slot sits 1 cm above the bottom of the terrain's first box (terrain boxes reach 1 m
    below the surface)."""
    most = max([len(b) for b in terrains] + [1])
    if slots is not None and slots < most:
        raise ValueError(f"a terrain has {most} boxes, more than the {slots} slots asked for")
    slots = most if slots is None else slots
    out = np.tile(PARKED_BOX, (len(terrains), slots, 1))
    for i, b in enumerate(terrains):
        out[i, :len(b)] = b
        if len(b):
            first = b[0]
            out[i, len(b):, :3] = first[:3] - np.array([0.0, 0.0, first[5] - 2 * PARKED_HALF])
            out[i, len(b):, 3:] = PARKED_HALF
    return out


def box_geom_fields(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Model fields of box geoms [..., 6] (centre, half sizes) as MuJoCo's compiler sets them:
    geom_pos, geom_size, geom_aabb (local centre and half extents) and geom_rbound."""
    b = np.asarray(boxes, dtype=np.float64)
    size = b[..., 3:]
    return {"geom_pos": b[..., :3], "geom_size": size,
            "geom_aabb": np.concatenate([np.zeros_like(size), size], axis=-1),
            "geom_rbound": np.linalg.norm(size, axis=-1)}


def world_bvh_aabb(bvh_child: np.ndarray, bvh_nodeid: np.ndarray, bvh_depth: np.ndarray, geom_pos: np.ndarray,
                   geom_aabb: np.ndarray) -> np.ndarray:
    """Bounding boxes [..., n, 6] (centre, half size) of the world body's BVH nodes for new
    terrain geoms (geom_pos [..., G, 3], geom_aabb [..., G, 6], batched alike).

    MuJoCo's compiler builds the tree for the parked boxes; its shape stays valid for any
    boxes as long as every node bounds its subtree: leaves bound their geom, inner nodes
    the union of their children (`bvh_child` is relative to the body's first node).
    """
    leaf = bvh_nodeid >= 0
    g = bvh_nodeid[leaf]
    centre = geom_pos[..., g, :] + geom_aabb[..., g, :3]
    lo = np.zeros(geom_pos.shape[:-2] + (len(bvh_nodeid), 3))
    hi = lo.copy()
    lo[..., leaf, :], hi[..., leaf, :] = centre - geom_aabb[..., g, 3:], centre + geom_aabb[..., g, 3:]
    for depth in range(int(bvh_depth.max()), -1, -1):  # children are one level deeper than parents
        inner = np.flatnonzero((bvh_depth == depth) & ~leaf)
        a, b = bvh_child[inner, 0], bvh_child[inner, 1]
        lo[..., inner, :] = np.minimum(lo[..., a, :], lo[..., b, :])
        hi[..., inner, :] = np.maximum(hi[..., a, :], hi[..., b, :])
    return np.concatenate([(lo + hi) / 2, (hi - lo) / 2], axis=-1)
