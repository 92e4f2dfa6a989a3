"""PARC's tracker observation (1312 values for PARC's humanoid), batched in torch.

The layout, in order (J = 14 joints, D = 28 DOF, K = 4 key bodies, B = 15 bodies):

=========  =====================================================================
0:136      the character, in its heading frame: root rotation (tan_norm, 6), root
           linear and angular velocity (3 + 3), joint rotations (tan_norm, 6 J), DOF
           velocities (D), key bodies minus root (3 K)
136:766    6 target frames at t + k/30 s, k in (1, 2, 3, 10, 20, 30), 105 values each:
           target root minus character root (3), target root rotation (6), target
           joint rotations (6 J), target key bodies minus character root (3 K), all
           in the character's heading frame except the joint rotations
766:856    the reference's contact labels at those 6 frames (6 B), blended linearly
856:871    the character's own contacts, 0/1 (B)
871:1312   7 height rays x 63 points ahead of the character: terrain height minus
           root height, clamped to [-3, 3]
=========  =====================================================================

Everything runs on [N, ...] tensors of one device with PARC's float32 arithmetic, for
all environments at once; nothing here loops over environments. Reference frames are
looked up as PARC's ``MotionLib`` does (see :class:`MotionTable`), terrain heights as
PARC's ``SubTerrain`` does (see :class:`TerrainStack`), except that every environment
reads its own motion's terrain instead of PARC's global tiled one (see docs/trackers.md,
"Height rays").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from physrec.formats.motion_file import MotionData
from physrec.motion import quat_torch as tq
from physrec.motion.character import Character
from physrec.motion.kinematics_torch import TorchKinematics
from physrec.motion.terrain import Heightfield

NAME = "parc"
TAR_OBS_STEPS = (1, 2, 3, 10, 20, 30)
KEY_BODIES = ("right_hand", "left_hand", "right_foot", "left_foot")
# Height rays (PARC's dm_env_default.yaml): 3 rays left and right of straight ahead, 15 deg
# apart; points every 0.05 m from 2 behind to 60 ahead of the root.
RAY_ANGLE = 0.26179938779
RAYS_LEFT, RAYS_RIGHT = 3, 3
RAY_DX, POINTS_BEHIND, POINTS_AHEAD = 0.05, 2, 60
MIN_OBS_H, MAX_OBS_H = -3.0, 3.0


@dataclass(frozen=True)
class CharacterState:
    """The simulated character in PARC's quantities, float32 tensors [N, ...].

    Root velocities are in world axes; ``dof``/``dof_vel`` use PARC's DOF coordinates
    (exponential map for 3-DoF joints); ``contacts`` are 0/1 per body. Positions are in
    the coordinates of each environment's own motion and terrain.

    ``joint_rot`` and ``key_pos`` are what PARC derives from the DOF (joint rotations,
    and key-body positions by forward kinematics); a simulator that has already computed
    them (a recorder checks terminations with the same kinematics) passes them in.
    """

    root_pos: torch.Tensor  # [N, 3]
    root_rot: torch.Tensor  # [N, 4] x, y, z, w
    root_vel: torch.Tensor  # [N, 3]
    root_ang_vel: torch.Tensor  # [N, 3]
    dof: torch.Tensor  # [N, D]
    dof_vel: torch.Tensor  # [N, D]
    contacts: torch.Tensor  # [N, B]
    joint_rot: torch.Tensor | None = None  # [N, J, 4]
    key_pos: torch.Tensor | None = None  # [N, K, 3], bodies KEY_BODIES

    FIELDS = ("root_pos", "root_rot", "root_vel", "root_ang_vel", "dof", "dof_vel", "contacts")

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: torch.device | str = "cpu") -> "CharacterState":
        """From float arrays of FIELDS (and optionally joint_rot, key_pos)."""
        return cls(**{k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device)
                      for k, v in arrays.items() if k in cls.FIELDS + ("joint_rot", "key_pos")})


class MotionTable:
    """Reference frames of many motions, looked up exactly as PARC's MotionLib does.

    The file's quaternions are used as stored (not normalised); a lookup at time t takes
    phase = t / L clamped to [0, 1] (WRAP motions wrap and shift the root by whole
    laps), frame = floor(phase * (n - 1)), blend = the rest, all in float32, and blends
    rotations with PARC's slerp.
    """

    def __init__(self, motions: list[MotionData], device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)

        def cat(name: str) -> torch.Tensor:
            return torch.as_tensor(np.concatenate([getattr(m, name) for m in motions]).astype(np.float32), device=dev)

        self.root_pos, self.contacts = cat("root_pos"), cat("body_contacts")
        self.rots = torch.cat([cat("root_rot")[:, None], cat("joint_rot")], dim=1)  # [frames, 1 + J, 4]
        n = [m.num_frames for m in motions]
        self.num_frames = torch.tensor(n, dtype=torch.long, device=dev)
        self.start = torch.tensor(np.concatenate([[0], np.cumsum(n)[:-1]]), dtype=torch.long, device=dev)
        # PARC: a Python float (n - 1) / fps stored as float32.
        self.length = torch.tensor([1.0 / m.fps * (m.num_frames - 1) for m in motions], dtype=torch.float32, device=dev)
        self.wrap = torch.tensor([m.loop_mode == "WRAP" for m in motions], dtype=torch.bool, device=dev)
        self.any_wrap = any(m.loop_mode == "WRAP" for m in motions)
        delta = torch.stack([torch.as_tensor(m.root_pos[-1] - m.root_pos[0], dtype=torch.float32) for m in motions])
        delta[:, 2] = 0
        self.lap_delta = delta.to(dev)

    def frame(self, motion: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Root position [N,3], root rotation [N,4], joint rotations [N,J,4], contacts [N,B]."""
        length, frames, wrap = (x.index_select(0, motion) for x in (self.length, self.num_frames, self.wrap))
        phase = time / length
        if self.any_wrap:
            phase = torch.where(wrap, phase - torch.floor(phase), phase)
        phase = phase.clip(0.0, 1.0)
        i0 = (phase * (frames - 1)).long()
        i1 = torch.minimum(i0 + 1, frames - 1)
        blend = phase * (frames - 1) - i0
        start = self.start.index_select(0, motion)
        i0, i1 = i0 + start, i1 + start
        b = blend.unsqueeze(-1)
        root_pos = (1.0 - b) * self.root_pos.index_select(0, i0) + b * self.root_pos.index_select(0, i1)
        if self.any_wrap:
            laps = torch.where(wrap, torch.floor(time / length), torch.zeros_like(time))
            root_pos = root_pos + laps.unsqueeze(-1) * self.lap_delta.index_select(0, motion)
        rots = tq.slerp(self.rots.index_select(0, i0), self.rots.index_select(0, i1), b)
        root_rot, joint_rot = rots[:, 0], rots[:, 1:]
        contacts = (1.0 - b) * self.contacts.index_select(0, i0) + b * self.contacts.index_select(0, i1)
        return root_pos, root_rot, joint_rot, contacts


class TerrainStack:
    """The terrains of many motions in one padded tensor; heights by nearest cell, clamped.

    Index = round-half-even((p - min_point) / dx) clamped to the motion's own grid, in
    float32, as PARC's ``SubTerrain.get_hf_val_from_points``.
    """

    def __init__(self, terrains: list[Heightfield], device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        shape = (len(terrains), max(t.shape[0] for t in terrains), max(t.shape[1] for t in terrains))
        hf = np.zeros(shape, dtype=np.float32)
        for k, t in enumerate(terrains):
            hf[k, :t.shape[0], :t.shape[1]] = t.hf
        self.hf = torch.as_tensor(hf, device=dev)
        # The last cell of each grid, as float: clamping before the cast to an index is cheaper.
        self.top = torch.tensor([t.shape for t in terrains], dtype=torch.float32, device=dev) - 1
        self.cells = shape[1] * shape[2]
        self.min_point = torch.tensor(np.stack([t.min_point for t in terrains]), dtype=torch.float32, device=dev)
        self.dx = torch.tensor([t.dx for t in terrains], dtype=torch.float32, device=dev)

    def height(self, motion: torch.Tensor, xy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Heights [N, P] under points (x [N, P], y [N, P]) of each environment's own terrain
        (the point tensors are used up: overwritten in place)."""
        low, dx, top = (t.index_select(0, motion) for t in (self.min_point, self.dx, self.top))
        dx = dx[:, None]
        ix = xy[0].sub_(low[:, 0:1]).div_(dx).round_().clamp_(min=0).minimum(top[:, 0:1]).to(torch.int32)
        iy = xy[1].sub_(low[:, 1:2]).div_(dx).round_().clamp_(min=0).minimum(top[:, 1:2]).to(torch.int32)
        flat = ix.mul_(self.hf.shape[2]).add_(iy).add_((motion.to(torch.int32) * self.cells)[:, None])  # int32: 2x faster
        return self.hf.view(-1).index_select(0, flat.view(-1)).view(flat.shape)


def ray_points(device: torch.device | str = "cpu") -> torch.Tensor:
    """[R * P, 2] ray points around a character at the origin facing +x, ray-major."""
    x = torch.linspace(-RAY_DX * POINTS_BEHIND, RAY_DX * POINTS_AHEAD, POINTS_BEHIND + POINTS_AHEAD + 1,
                       dtype=torch.float32, device=device)
    line = torch.stack([x, torch.zeros_like(x)], dim=-1)
    rays = [tq.rotate_2d(line, torch.full_like(x, -RAY_ANGLE * (RAYS_LEFT - i)))
            for i in range(RAYS_LEFT + 1 + RAYS_RIGHT)]
    return torch.cat(rays, dim=0)


def observation_shapes(character: Character) -> "OrderedDict[str, tuple[int, ...]]":
    """PARC's obs_shapes: the parts of the observation in order, with their shapes."""
    J, D, K, B = character.num_joints, character.num_dof, len(KEY_BODIES), character.num_bodies
    S = len(TAR_OBS_STEPS)
    return OrderedDict([
        ("char_obs", (12 + 6 * J + D + 3 * K,)),
        ("tar_obs", (S, 9 + 6 * J + 3 * K)),
        ("tar_contacts", (S, B)),
        ("char_contacts", (B,)),
        ("hf", ((RAYS_LEFT + 1 + RAYS_RIGHT) * (POINTS_BEHIND + POINTS_AHEAD + 1),)),
    ])


def observation_size(character: Character) -> int:
    return sum(int(np.prod(s)) for s in observation_shapes(character).values())


class Observation:
    """PARC's observation for the environments of one batch: reference, terrain, kinematics.

    ``motions[k]`` and ``terrains[k]`` belong to motion k; ``compute`` takes, per
    environment, the index of its motion and its motion time.
    """

    def __init__(self, character: Character, motions: list[MotionData], terrains: list[Heightfield],
                 control_dt: float = 1.0 / 30.0, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.kin = TorchKinematics(character, self.device)
        self.key_index = self.kin.body_index(KEY_BODIES)
        self.key_bodies = self.kin.select(self.key_index)
        self.table = MotionTable(motions, self.device)
        self.terrain = TerrainStack(terrains, self.device)
        self.rays = ray_points(self.device)
        # PARC: a Python float timestep times an int32 tensor of steps, in float32.
        self.control_dt = control_dt
        self.tar_offsets = control_dt * torch.tensor(TAR_OBS_STEPS, dtype=torch.int32, device=self.device)

    def motion_time(self, motion: torch.Tensor, start_fraction: float | np.ndarray, steps: torch.Tensor) -> torch.Tensor:
        """PARC's motion time `steps` control steps after a reset at `start_fraction` of the motion
        (one, or one per row): float32(control_dt) * steps (an int32 tensor) plus float32 length *
        float32 fraction."""
        start = self.table.length[motion] * torch.as_tensor(start_fraction, dtype=torch.float32, device=self.device)
        return self.control_dt * steps + start

    def _ray_points(self, heading: torch.Tensor, root_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y [N, P] of the ray points: PARC's rotate_2d by the heading, then + root xy."""
        c, s = torch.cos(heading)[:, None], torch.sin(heading)[:, None]
        x, y = self.rays[:, 0], self.rays[:, 1]
        # In place where possible: these are the largest tensors of a step ([N, 441]).
        px = (x * c).sub_(y * s).add_(root_pos[:, 0:1])
        py = (x * s).add_(y * c).add_(root_pos[:, 1:2])
        return px, py

    def targets(self, motion: torch.Tensor, time: torch.Tensor) -> "TargetFrames":
        """The S target frames of N environments at motion time `time` [N]: everything of
        the target part that does not depend on the character's state, so a recorder can
        look up several control steps at once and slice them."""
        n, S = motion.shape[0], len(TAR_OBS_STEPS)
        tar_time = (time[:, None] + self.tar_offsets).reshape(-1)
        pos, rot, joints, contacts = self.table.frame(motion.repeat_interleave(S), tar_time)
        key = self.kin.body_positions(pos, rot, joints, self.key_bodies)
        return TargetFrames(pos=pos.reshape(n, S, 3), rot=rot.reshape(n, S, 4),
                            joints=tq.tan_norm(joints).reshape(n, S, -1), key=key.reshape(n, S, -1, 3),
                            contacts=contacts.reshape(n, -1))

    def whole(self, root_rot: torch.Tensor) -> dict[str, torch.Tensor]:
        """What :meth:`compute` computes for all its rows at once, from root rotations [N, 4], and
        whose bits depend on N: the heading's atan2, which torch's CPU kernel takes on a vectorised
        path for whole blocks of values (32 with AVX-512) and on a scalar one for the rest, with
        other roundings. Given these for a whole batch, :meth:`compute` on any slice of its rows
        gives the rows' bits of one call for all (tests/test_observer.py)."""
        return {"heading": tq.heading(root_rot)}

    def compute(self, state: CharacterState, motion: torch.Tensor, time: torch.Tensor | None,
                targets: "TargetFrames | None" = None, whole: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Observations [N, size] (float32) of N characters following motions `motion` at motion
        time `time` [N]; or, instead of the time, `targets`: :meth:`targets` already looked up.
        `whole`: :meth:`whole` of these rows, when they are a slice of a larger batch."""
        n, K = state.root_pos.shape[0], len(KEY_BODIES)
        tar = self.targets(motion, time) if targets is None else targets
        S = tar.pos.shape[1]
        root_pos, root_rot = state.root_pos, state.root_rot
        heading = (self.whole(root_rot) if whole is None else whole)["heading"]
        hinv = tq.heading_quat(-heading)
        joints = self.kin.dof_to_joint_rot(state.dof) if state.joint_rot is None else state.joint_rot
        key = state.key_pos
        if key is None:
            key = self.kin.body_positions(root_pos, root_rot, joints, self.key_bodies)
        # Into the heading frame at once: root velocity and angular velocity, own key bodies
        # minus root, target roots minus own root, target key bodies minus their target root.
        vectors = torch.cat([state.root_vel[:, None], state.root_ang_vel[:, None], key - root_pos[:, None],
                             tar.pos - root_pos[:, None], (tar.key - tar.pos[:, :, None]).flatten(1, 2)], dim=1)
        local = tq.rotate(hinv[:, None].expand(n, vectors.shape[1], 4), vectors)
        rel_root = local[:, 2 + K:2 + K + S]
        rel_key = local[:, 2 + K + S:].reshape(n, S, K, 3) + rel_root[:, :, None]
        # tan_norms: own root and the target roots (heading removed), then own joints.
        rots = torch.cat([tq.mul(hinv[:, None].expand(n, S + 1, 4), torch.cat([root_rot[:, None], tar.rot], 1)),
                          joints], dim=1)
        tn = tq.tan_norm(rots)
        own = [tn[:, 0], local[:, 0], local[:, 1], tn[:, S + 1:].flatten(1), state.dof_vel,
               local[:, 2:2 + K].flatten(1)]
        target = torch.cat([rel_root, tn[:, 1:S + 1], tar.joints, rel_key.flatten(2)], dim=-1)

        rays = (self.terrain.height(motion, self._ray_points(heading, root_pos)) - root_pos[:, 2:3])
        rays = rays.clamp(MIN_OBS_H, MAX_OBS_H)
        return torch.cat(own + [target.flatten(1), tar.contacts, state.contacts, rays], dim=-1)


@dataclass(frozen=True)
class TargetFrames:
    """Target frames of N environments in their motions' coordinates: root positions [N,S,3]
    and rotations [N,S,4], joint tan_norms [N,S,6J], key bodies [N,S,K,3], contacts [N,S*B]."""

    pos: torch.Tensor
    rot: torch.Tensor
    joints: torch.Tensor
    key: torch.Tensor
    contacts: torch.Tensor

    def rows(self, rows: torch.Tensor | slice) -> "TargetFrames":
        """The frames of some environments: a gather for an index tensor, views for a slice."""
        parts = (self.pos, self.rot, self.joints, self.key, self.contacts)
        if isinstance(rows, slice):
            return TargetFrames(*(x[rows] for x in parts))
        return TargetFrames(*(x.index_select(0, rows) for x in parts))
