"""Quaternion maths on torch tensors with PARC's float32 arithmetic (x, y, z, w: scalar last).

A policy trained in PARC has seen observations computed by these formulas; some of its
inputs sit at a normaliser std of 1e-4, so an observation that is "mathematically the
same" but rounded differently can move the action. The functions here therefore follow
PARC's own formulas where the rounding or a special case matters: the thresholds of
``exp_map_to_quat`` and of ``slerp`` (which averages nearly equal quaternions without
normalising them), and the heading quaternion built through ``axis_angle_to_quat``.
They run on any device; :mod:`physrec.motion.quat` is the float64 numpy twin used by
the simulator side, and the only place that converts to MuJoCo's scalar-first order.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def normalize(x: Tensor, eps: float = 1e-9) -> Tensor:
    return x / x.norm(p=2, dim=-1).clamp(min=eps).unsqueeze(-1)


def positive_w(q: Tensor) -> Tensor:
    return torch.where(q[..., 3:] < 0, -q, q)


def conj(q: Tensor) -> Tensor:
    return torch.cat([-q[..., :3], q[..., 3:]], dim=-1)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a*b (apply b first, then a)."""
    x1, y1, z1, w1 = a.unbind(-1)
    x2, y2, z2, w2 = b.unbind(-1)
    return torch.stack([
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
    ], dim=-1)


def rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v by quaternions q (not renormalised: PARC never does)."""
    qv, qw = q[..., :3], q[..., 3:]
    t = 2 * torch.cross(qv, v, dim=-1)
    return v + qw * t + torch.cross(qv, t, dim=-1)


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
    """[R x, R z]: the 6-value rotation encoding of PARC's observation."""
    x = torch.zeros_like(q[..., :3])
    x[..., 0] = 1
    z = torch.zeros_like(q[..., :3])
    z[..., 2] = 1
    return torch.cat([rotate(q, x), rotate(q, z)], dim=-1)


def heading(q: Tensor) -> Tensor:
    """Yaw of the rotated x axis about world z."""
    x = torch.zeros_like(q[..., :3])
    x[..., 0] = 1
    d = rotate(q, x)
    return torch.atan2(d[..., 1], d[..., 0])


def heading_inv(q: Tensor) -> Tensor:
    """Rotation about z by minus the heading: world axes -> the character's heading frame."""
    z = torch.zeros_like(q[..., :3])
    z[..., 2] = 1
    return axis_angle_to_quat(z, -heading(q))


def rotate_2d(v: Tensor, angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = v[..., 0], v[..., 1]
    return torch.stack([x * c - y * s, x * s + y * c], dim=-1)


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """PARC's slerp, special cases included (t broadcasts against q0[..., 0]).

    Where |sin(half angle)| < 0.001 it returns 0.5 * (q0 + q1), unnormalised, whatever t
    is; where |cos(half angle)| >= 1 it returns q0.
    """
    cos_half = (q0 * q1).sum(dim=-1)
    q1 = torch.where((cos_half < 0).unsqueeze(-1), -q1, q1)
    cos_half = cos_half.abs().unsqueeze(-1)
    half = torch.acos(cos_half)
    sin_half = torch.sqrt(1.0 - cos_half * cos_half)
    t = t.unsqueeze(-1)
    out = torch.sin((1 - t) * half) / sin_half * q0 + torch.sin(t * half) / sin_half * q1
    out = torch.where(sin_half.abs() < 0.001, 0.5 * q0 + 0.5 * q1, out)
    return torch.where(cos_half.abs() >= 1, q0, out)
