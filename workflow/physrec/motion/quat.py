"""Quaternion maths on numpy arrays, in PARC's order (x, y, z, w: scalar last).

Everything in physrec keeps quaternions scalar-last, as PARC's files do. MuJoCo wants
scalar-first; :data:`TO_MUJOCO` and :data:`FROM_MUJOCO` say how, once, for these
functions and for their torch twins (quat_torch). All functions broadcast over leading
dimensions.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-9


TO_MUJOCO = (3, 0, 1, 2)  # (x, y, z, w)[TO_MUJOCO] = MuJoCo's (w, x, y, z)
FROM_MUJOCO = (1, 2, 3, 0)  # (w, x, y, z)[FROM_MUJOCO] = (x, y, z, w)


def to_mujoco(q_xyzw: np.ndarray) -> np.ndarray:
    """(x, y, z, w) -> MuJoCo's (w, x, y, z)."""
    return q_xyzw[..., TO_MUJOCO]


def from_mujoco(q_wxyz: np.ndarray) -> np.ndarray:
    """MuJoCo's (w, x, y, z) -> (x, y, z, w)."""
    return q_wxyz[..., FROM_MUJOCO]


def identity(shape: tuple[int, ...] = ()) -> np.ndarray:
    q = np.zeros(shape + (4,))
    q[..., 3] = 1.0
    return q


def normalize(q: np.ndarray) -> np.ndarray:
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)


def positive_w(q: np.ndarray) -> np.ndarray:
    """Pick the sign with w >= 0 (q and -q are the same rotation; PARC's files store w >= 0)."""
    return np.where(q[..., 3:4] < 0, -q, q)


def conj(q: np.ndarray) -> np.ndarray:
    return np.concatenate([-q[..., :3], q[..., 3:4]], axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross without its axis bookkeeping, which dominates on the small arrays used here."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b (apply b first, then a)."""
    av, aw = a[..., :3], a[..., 3:4]
    bv, bw = b[..., :3], b[..., 3:4]
    v = aw * bv + bw * av + _cross(av, bv)
    w = aw * bw - np.sum(av * bv, axis=-1, keepdims=True)
    return np.concatenate([v, w], axis=-1)


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v by unit quaternions q."""
    qv, qw = q[..., :3], q[..., 3:4]
    t = 2.0 * _cross(qv, v)
    return v + qw * t + _cross(qv, t)


def to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] -> rotation matrices [..., 3, 3]."""
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def from_axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    half = 0.5 * np.asarray(angle, dtype=np.float64)[..., None]
    return np.concatenate([axis * np.sin(half), np.cos(half)], axis=-1)


def exp_map_to_quat(e: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) -> unit quaternion."""
    angle = np.linalg.norm(e, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(angle/2)/angle, with its limit 1/2 near zero.
    scale = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([e * scale, np.cos(half)], axis=-1)


def quat_to_exp_map(q: np.ndarray) -> np.ndarray:
    """Unit quaternion -> rotation vector with angle in [0, pi]."""
    q = positive_w(normalize(q))
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., 3:4])
    scale = np.where(sin_half > 1e-8, angle / np.maximum(sin_half, 1e-12), 2.0)
    return q[..., :3] * scale


def angle(q: np.ndarray) -> np.ndarray:
    """Rotation angle of q in [0, pi]."""
    q = normalize(q)
    return 2.0 * np.arctan2(np.linalg.norm(q[..., :3], axis=-1), np.abs(q[..., 3]))


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of the rotation that takes b to a."""
    return angle(mul(a, conj(b)))


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation along the shorter arc; t broadcasts against a[..., 0]."""
    t = np.asarray(t, dtype=np.float64)[..., None]
    d = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(d < 0, -b, b)
    d = np.abs(d)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    wa = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    wb = np.where(near, t, np.sin(t * theta) / safe)
    return normalize(wa * a + wb * b)


def heading(q: np.ndarray) -> np.ndarray:
    """Yaw of the rotated x axis about world z (PARC's calc_heading)."""
    x = rotate(q, np.broadcast_to(np.array([1.0, 0.0, 0.0]), q.shape[:-1] + (3,)))
    return np.arctan2(x[..., 1], x[..., 0])


def hinge_angle(q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Signed angle of the rotation q about a unit axis (its twist component)."""
    proj = np.sum(q[..., :3] * axis, axis=-1)
    a = 2.0 * np.arctan2(proj, q[..., 3])
    return (a + np.pi) % (2.0 * np.pi) - np.pi
