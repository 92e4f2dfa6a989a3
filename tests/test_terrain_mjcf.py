"""MuJoCo check of physrec.sim.terrain_mjcf: box terrain gives flat cells and vertical step walls."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from physrec.motion.terrain import Heightfield, heightfield_boxes
from physrec.sim.terrain_mjcf import terrain_geoms_xml

DX = 0.4
LOW, HIGH, RADIUS = 0.0, 0.5, 0.1
WALL_X = 4.8  # boundary between cell rows 11 (low) and 12 (high) with min_point x = 0.2


def _step_terrain() -> Heightfield:
    hf = np.full((20, 10), LOW, dtype=np.float32)
    hf[12:] = HIGH
    return Heightfield(hf=hf, min_point=np.array([0.2, 0.2], dtype=np.float32), dx=DX)


def _sphere(name: str, x: float, y: float, z: float) -> str:
    return (
        f'<body name="{name}" pos="{x} {y} {z}"><freejoint/>'
        f'<geom type="sphere" size="{RADIUS}" contype="2" conaffinity="1"/></body>'
    )


def _drop_spheres(drops: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Drop spheres from 1 m above the step and return each one's final centre height."""
    boxes = heightfield_boxes(_step_terrain(), bottom=-1.0)
    bodies = "".join(_sphere(n, x, y, HIGH + 1.0) for n, (x, y) in drops.items())
    xml = (
        '<mujoco><option timestep="0.002"/><worldbody>'
        f"{terrain_geoms_xml(boxes)}{bodies}</worldbody></mujoco>"
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data, nstep=500)
    return {n: float(data.body(n).xpos[2]) for n in drops}


def test_xml_is_deterministic_and_exact():
    boxes = np.array([[0.1, 0.2, -0.3, 0.30000000000000004, 1.0, 2.5]])
    xml = terrain_geoms_xml(boxes, friction=0.8, name_prefix="t")
    assert xml == terrain_geoms_xml(boxes, friction=0.8, name_prefix="t")
    assert 'pos="0.1 0.2 -0.3"' in xml and 'size="0.30000000000000004 1.0 2.5"' in xml
    assert 'friction="0.8 0.005 0.0001"' in xml and 'name="t_0"' in xml
    for attr in ('type="box"', 'condim="3"', 'contype="1"', 'conaffinity="1"', 'group="3"'):
        assert attr in xml
    model = mujoco.MjModel.from_xml_string(f"<mujoco><worldbody>{xml}</worldbody></mujoco>")
    np.testing.assert_array_equal(model.geom_size[0], boxes[0, 3:])
    np.testing.assert_array_equal(model.geom_pos[0], boxes[0, :3])
    assert terrain_geoms_xml(np.zeros((0, 6))) == ""


def test_spheres_rest_on_cell_heights_and_walls_are_vertical():
    final = _drop_spheres({"low": (2.0, 1.0), "high": (6.4, 1.0), "wall": (WALL_X - 0.05, 3.0)})
    assert final["low"] == pytest.approx(LOW + RADIUS, abs=5e-3)
    assert final["high"] == pytest.approx(HIGH + RADIUS, abs=5e-3)
    # Against the wall the sphere ends on one of the flat cells, never on a slope in between.
    assert min(abs(final["wall"] - (z + RADIUS)) for z in (LOW, HIGH)) < 5e-3
