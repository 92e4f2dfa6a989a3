"""MJCF box geoms for a voxelised PARC terrain (see terrain.heightfield_boxes)."""

from __future__ import annotations

import numpy as np


def _num(v: float) -> str:
    """Shortest text that parses back to the same float64, so the model is reproducible."""
    return repr(float(v))


def _vec(values: np.ndarray) -> str:
    return " ".join(_num(v) for v in values)


def terrain_geoms_xml(boxes: np.ndarray, *, friction: float = 1.0, name_prefix: str = "terrain") -> str:
    """One static `<geom type="box">` line per box row (cx, cy, cz, hx, hy, hz), for a `<worldbody>`.

    Collision settings mirror PARC's terrain (sliding friction configurable, PhysX-like
    3-D contacts); group 3 keeps the terrain separable from the character in viewers.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    fric = f"{_num(friction)} 0.005 0.0001"
    lines = [
        f'<geom name="{name_prefix}_{k}" type="box" pos="{_vec(row[:3])}" size="{_vec(row[3:])}" '
        f'friction="{fric}" condim="3" contype="1" conaffinity="1" group="3"/>'
        for k, row in enumerate(b)
    ]
    return "\n".join(lines) + ("\n" if lines else "")
