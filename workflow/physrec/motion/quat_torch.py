"""Quaternion maths on torch tensors with PARC's float32 arithmetic (x, y, z, w: scalar last).

A policy trained in PARC has seen observations computed by these formulas; some of its
inputs sit at a normaliser std of 1e-4, so an observation that is "mathematically the
same" but rounded differently can move the action. The functions here therefore follow
PARC's own formulas where the rounding or a special case matters: the thresholds of
``exp_map_to_quat`` and of ``slerp`` (which averages nearly equal quaternions without
normalising them), and the heading quaternion built through ``axis_angle_to_quat``.
They run on any device; :mod:`physrec.motion.quat` is the float64 numpy twin used by
the simulator side, and defines MuJoCo's scalar-first order. The last functions here
(from MuJoCo's state to PARC's quantities, angles) follow that twin, for a recorder whose
control loop runs on the GPU.
"""

from __future__ import annotations

import torch

from physrec.motion.quat import FROM_MUJOCO

Tensor = torch.Tensor


def normalize(x: Tensor, eps: float = 1e-9) -> Tensor:
    return x / x.norm(p=2, dim=-1).clamp(min=eps).unsqueeze(-1)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a*b (apply b first, then a)."""
    av, aw, bv, bw = a[..., :3], a[..., 3:], b[..., :3], b[..., 3:]
    v = aw * bv + bw * av + torch.linalg.cross(av, bv)
    return torch.cat([v, aw * bw - (av * bv).sum(-1, keepdim=True)], dim=-1)


def rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v by quaternions q (not renormalised: PARC never does)."""
    qv, qw = q[..., :3], q[..., 3:]
    t = 2 * torch.linalg.cross(qv, v)
    return v + qw * t + torch.linalg.cross(qv, t)


def axis_angle_to_quat(axis: Tensor, angle: Tensor) -> Tensor:
    half = (angle / 2).unsqueeze(-1)
    return normalize(torch.cat([normalize(axis) * half.sin(), half.cos()], dim=-1))


def exp_map_to_quat(e: Tensor) -> Tensor:
    """Rotation vector -> quaternion; angles wrap to (-pi, pi], below 1e-5 rad it is the identity."""
    angle = e.norm(dim=-1)
    axis = e / angle.unsqueeze(-1)
    angle = torch.atan2(torch.sin(angle), torch.cos(angle))
    keep = angle.abs() > 1e-5
    z = torch.zeros_like(e)
    z[..., 2] = 1
    axis = torch.where(keep.unsqueeze(-1), axis, z)
    return axis_angle_to_quat(axis, torch.where(keep, angle, torch.zeros_like(angle)))


def tan_norm(q: Tensor) -> Tensor:
    """[R x, R z]: the 6-value rotation encoding of PARC's observation.

    The closed form of PARC's ``quat_rotate(q, x)`` and ``quat_rotate(q, z)``, which for
    any q (unit or not) is the same linear map; identity and single-axis rotations give
    exact zeros and ones, as the constant dimensions of a trained normaliser need.
    """
    x, y, z, w = q.unbind(-1)
    xx, yy, zz, xy, xz, yz, xw, yw, zw = x * x, y * y, z * z, x * y, x * z, y * z, x * w, y * w, z * w
    return torch.stack([1 - 2 * (yy + zz), 2 * (xy + zw), 2 * (xz - yw),
                        2 * (xz + yw), 2 * (yz - xw), 1 - 2 * (xx + yy)], dim=-1)


def heading(q: Tensor) -> Tensor:
    """Yaw of the rotated x axis about world z."""
    x = torch.zeros_like(q[..., :3])
    x[..., 0] = 1
    d = rotate(q, x)
    return torch.atan2(d[..., 1], d[..., 0])


def heading_quat(angle: Tensor) -> Tensor:
    """Rotation about world z by `angle` (PARC's axis_angle_to_quat with the z axis); with
    minus the heading it takes world axes to the character's heading frame."""
    half = angle / 2
    zero = torch.zeros_like(half)
    return normalize(torch.stack([zero, zero, half.sin(), half.cos()], dim=-1))


def rotate_2d(v: Tensor, angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = v[..., 0], v[..., 1]
    return torch.stack([x * c - y * s, x * s + y * c], dim=-1)


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """PARC's slerp, special cases included (t broadcasts against q0[..., 0]).

    Where |sin(half angle)| < 0.001 it returns 0.5 * (q0 + q1), unnormalised, whatever t
    is; where |cos(half angle)| >= 1 it returns q0. The cases pick the two weights (one
    value per quaternion) before the one weighted sum; the arithmetic of each case is PARC's.
    """
    cos_half = (q0 * q1).sum(dim=-1, keepdim=True)
    sign = torch.where(cos_half < 0, -1.0, 1.0)  # PARC flips q1 to the shorter arc
    cos_half = cos_half.abs()
    half = torch.acos(cos_half)
    sin_half = torch.sqrt(1.0 - cos_half * cos_half)
    t = t.unsqueeze(-1)
    wa = torch.sin((1 - t) * half) / sin_half
    wb = torch.sin(t * half) / sin_half
    near = sin_half.abs() < 0.001
    same = cos_half.abs() >= 1
    wa = torch.where(same, 1.0, torch.where(near, 0.5, wa))
    wb = torch.where(same, 0.0, torch.where(near, 0.5, wb))
    return wa * q0 + (wb * sign) * q1


# -- twins of physrec.motion.quat, for the simulator side on a device -------------------------
def from_mujoco(q_wxyz: Tensor) -> Tensor:
    """MuJoCo's (w, x, y, z) -> (x, y, z, w)."""
    return q_wxyz[..., list(FROM_MUJOCO)]


def quat_to_exp_map(q: Tensor) -> Tensor:
    """Unit quaternion -> rotation vector with angle in [0, pi] (quat.quat_to_exp_map)."""
    q = normalize(q)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    sin_half = q[..., :3].norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, q[..., 3:4])
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp(min=1e-12), torch.full_like(angle, 2.0))
    return q[..., :3] * scale


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Angle in [0, pi] of the rotation that takes b to a (quat.angle_between)."""
    q = normalize(mul(a, torch.cat([-b[..., :3], b[..., 3:]], dim=-1)))
    return 2.0 * torch.atan2(q[..., :3].norm(dim=-1), q[..., 3].abs())


def hinge_angle(q: Tensor, axis: Tensor) -> Tensor:
    """Signed angle of q about a unit axis, in [-pi, pi) (quat.hinge_angle)."""
    a = 2.0 * torch.atan2((q[..., :3] * axis).sum(-1), q[..., 3])
    return torch.remainder(a + torch.pi, 2.0 * torch.pi) - torch.pi
