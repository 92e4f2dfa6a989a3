"""A renderer without OpenGL, for machines that have neither EGL nor OSMesa (a machine with
only Python): the terrain's boxes and the character's spheres, capsules and boxes, projected
by the same camera as MuJoCo's free camera and drawn back to front with Pillow, flat shaded.

Plainer than MuJoCo's renderer (no shadows, no depth test inside a primitive, the reference
ghost drawn over the scene), and enough to see what the tracker did. MuJoCo computes the
geoms' poses (mj_kinematics); nothing here needs a GPU or a display.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

_LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
_BOX_FACES = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
_BOX_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], float)
_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
_SKY = (200, 214, 230)
_BOX, _SPHERE, _CAPSULE = 6, 2, 3  # mjtGeom values (mjGEOM_BOX, mjGEOM_SPHERE, mjGEOM_CAPSULE)
VISIBLE_M = 40.0  # geoms farther than this from the camera's target are not drawn (parked terrain slots)


class Camera:
    """MuJoCo's free camera (lookat, distance, azimuth, elevation in degrees, vertical fov)."""

    def __init__(self, width: int, height: int, distance: float, azimuth: float, elevation: float,
                 fovy: float = 45.0) -> None:
        az, el = math.radians(azimuth), math.radians(elevation)
        self.forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        self.right = np.cross(self.forward, [0.0, 0.0, 1.0])
        self.right /= np.linalg.norm(self.right)
        self.up = np.cross(self.right, self.forward)
        self.distance, self.width, self.height = distance, width, height
        self.focal = (height / 2) / math.tan(math.radians(fovy) / 2)
        self.eye = np.zeros(3)

    def look_at(self, target: np.ndarray) -> None:
        self.eye = np.asarray(target, float) - self.distance * self.forward

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [..., 2] and depths [...] of world points [..., 3]."""
        v = points - self.eye
        z = v @ self.forward
        zs = np.maximum(z, 1e-3)
        px = self.width / 2 + self.focal * (v @ self.right) / zs
        py = self.height / 2 - self.focal * (v @ self.up) / zs
        return np.stack([px, py], axis=-1), z


def _shade(rgb: np.ndarray, normal: np.ndarray) -> tuple[int, int, int]:
    k = 0.45 + 0.55 * max(0.0, float(normal @ _LIGHT))
    return tuple(int(c) for c in np.clip(rgb * 255 * k, 0, 255))  # type: ignore[return-value]


def _primitives(model, data, cam: Camera, geoms: np.ndarray, rgba: np.ndarray | None) -> list[tuple]:
    """(depth, kind, pixels, colour, radius) of each geom's visible parts."""
    out = []
    target = cam.eye + cam.distance * cam.forward
    for g in geoms:
        pos, rot = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3)
        if np.linalg.norm(pos - target) > VISIBLE_M:
            continue
        colour = (model.geom_rgba[g] if rgba is None else rgba)[:3]
        size, kind = model.geom_size[g], int(model.geom_type[g])
        if kind == _BOX:
            corners = pos + (_CORNERS * size) @ rot.T
            px, z = cam.project(corners)
            if (z <= 0.05).any():
                continue
            for face, n in zip(_BOX_FACES, _BOX_NORMALS):
                normal = rot @ n
                centre = corners[list(face)].mean(axis=0)
                if normal @ (centre - cam.eye) >= 0:
                    continue  # faces away
                out.append((float(z[list(face)].mean()), "poly", px[list(face)], _shade(colour, normal), 0.0))
        elif kind in (_SPHERE, _CAPSULE):
            half = rot[:, 2] * (size[1] if kind == _CAPSULE else 0.0)
            ends = np.stack([pos - half, pos + half])
            px, z = cam.project(ends)
            if (z <= 0.05).any():
                continue
            radius = cam.focal * size[0] / float(z.mean())
            out.append((float(z.mean()), "capsule", px, _shade(colour, -cam.forward * 0.6 + _LIGHT * 0.4), radius))
    return out


def _draw(draw, prims: list[tuple], alpha: int | None = None) -> None:
    for _, kind, px, colour, radius in sorted(prims, key=lambda p: -p[0]):
        fill = colour if alpha is None else (*colour, alpha)
        if kind == "poly":
            draw.polygon([tuple(p) for p in px], fill=fill)
            continue
        (x0, y0), (x1, y1) = px
        if radius * 2 >= 1 and (x0, y0) != (x1, y1):
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=max(1, int(round(2 * radius))))
        for x, y in px:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


def software_frames(model, sim_qpos: np.ndarray, ref_qpos: np.ndarray, width: int, height: int,
                    camera: dict, ghost_rgba: tuple) -> Iterator[np.ndarray]:
    """RGB frames [H, W, 3]: terrain and simulated character, the reference drawn translucent over them."""
    import mujoco
    from PIL import Image, ImageDraw
    sim, ref = mujoco.MjData(model), mujoco.MjData(model)
    cam = Camera(width, height, camera["distance"], camera["azimuth"], camera["elevation"], float(model.vis.global_.fovy))
    character = np.flatnonzero(model.geom_bodyid > 0)
    terrain = np.flatnonzero(model.geom_bodyid == 0)
    ghost = np.asarray(ghost_rgba[:3], float)
    lookat = sim_qpos[0, :3].copy()
    for q_sim, q_ref in zip(sim_qpos, ref_qpos):
        sim.qpos[:], ref.qpos[:] = q_sim, q_ref
        mujoco.mj_kinematics(model, sim)
        mujoco.mj_kinematics(model, ref)
        lookat = 0.8 * lookat + 0.2 * q_sim[:3]  # as the OpenGL path: a camera that follows the root
        cam.look_at(lookat)
        image = Image.new("RGB", (width, height), _SKY)
        _draw(ImageDraw.Draw(image), _primitives(model, sim, cam, terrain, None) +
              _primitives(model, sim, cam, character, None))
        overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        _draw(ImageDraw.Draw(overlay), _primitives(model, ref, cam, character, ghost), int(255 * ghost_rgba[3]))
        image.paste(overlay, (0, 0), overlay)
        yield np.asarray(image)
