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
reads its own motion's terrain instead of PARC's global tiled one (see the README,
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
    """

    root_pos: torch.Tensor  # [N, 3]
    root_rot: torch.Tensor  # [N, 4] x, y, z, w
    root_vel: torch.Tensor  # [N, 3]
    root_ang_vel: torch.Tensor  # [N, 3]
    dof: torch.Tensor  # [N, D]
    dof_vel: torch.Tensor  # [N, D]
    contacts: torch.Tensor  # [N, B]

    FIELDS = ("root_pos", "root_rot", "root_vel", "root_ang_vel", "dof", "dof_vel", "contacts")

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: torch.device | str = "cpu") -> "CharacterState":
        return cls(**{k: torch.as_tensor(np.asarray(arrays[k], dtype=np.float32), device=device)
                      for k in cls.FIELDS})


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

        self.root_pos, self.root_rot = cat("root_pos"), cat("root_rot")
        self.joint_rot, self.contacts = cat("joint_rot"), cat("body_contacts")
        n = [m.num_frames for m in motions]
        self.num_frames = torch.tensor(n, dtype=torch.long, device=dev)
        self.start = torch.tensor(np.concatenate([[0], np.cumsum(n)[:-1]]), dtype=torch.long, device=dev)
        # PARC: a Python float (n - 1) / fps stored as float32.
        self.length = torch.tensor([1.0 / m.fps * (m.num_frames - 1) for m in motions], dtype=torch.float32, device=dev)
        self.wrap = torch.tensor([m.loop_mode == "WRAP" for m in motions], dtype=torch.bool, device=dev)
        delta = torch.stack([torch.as_tensor(m.root_pos[-1] - m.root_pos[0], dtype=torch.float32) for m in motions])
        delta[:, 2] = 0
        self.lap_delta = delta.to(dev)

    def frame(self, motion: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Root position [N,3], root rotation [N,4], joint rotations [N,J,4], contacts [N,B]."""
        length, frames, wrap = self.length[motion], self.num_frames[motion], self.wrap[motion]
        phase = time / length
        phase = torch.where(wrap, phase - torch.floor(phase), phase).clip(0.0, 1.0)
        i0 = (phase * (frames - 1)).long()
        i1 = torch.minimum(i0 + 1, frames - 1)
        blend = phase * (frames - 1) - i0
        i0, i1 = i0 + self.start[motion], i1 + self.start[motion]
        b = blend.unsqueeze(-1)
        root_pos = (1.0 - b) * self.root_pos[i0] + b * self.root_pos[i1]
        laps = torch.where(wrap, torch.floor(time / length), torch.zeros_like(time))
        root_pos = root_pos + laps.unsqueeze(-1) * self.lap_delta[motion]
        root_rot = tq.slerp(self.root_rot[i0], self.root_rot[i1], blend)
        joint_rot = tq.slerp(self.joint_rot[i0], self.joint_rot[i1], b)
        contacts = (1.0 - b) * self.contacts[i0] + b * self.contacts[i1]
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
        self.dims = torch.tensor([t.shape for t in terrains], dtype=torch.long, device=dev)
        self.min_point = torch.tensor(np.stack([t.min_point for t in terrains]), dtype=torch.float32, device=dev)
        self.dx = torch.tensor([t.dx for t in terrains], dtype=torch.float32, device=dev)

    def height(self, motion: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Heights [N, P] under points xy [N, P, 2] of each environment's own terrain."""
        rel = (xy - self.min_point[motion, None, :]) / self.dx[motion, None, None]
        idx = torch.round(rel).long()
        idx = torch.minimum(idx.clamp(min=0), self.dims[motion, None, :] - 1)
        return self.hf[motion[:, None], idx[..., 0], idx[..., 1]]


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


# Parts that PARC's normaliser leaves alone (use_normalizer False): mean 0, std 1.
UNNORMALISED_PARTS = ("tar_contacts", "char_contacts", "hf")


class Observation:
    """PARC's observation for the environments of one batch: reference, terrain, kinematics.

    ``motions[k]`` and ``terrains[k]`` belong to motion k; ``compute`` takes, per
    environment, the index of its motion and its motion time.
    """

    name = NAME

    def __init__(self, character: Character, motions: list[MotionData], terrains: list[Heightfield],
                 control_dt: float = 1.0 / 30.0, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.kin = TorchKinematics(character, self.device)
        self.key_bodies = torch.tensor(self.kin.body_index(KEY_BODIES), device=self.device)
        self.table = MotionTable(motions, self.device)
        self.terrain = TerrainStack(terrains, self.device)
        self.rays = ray_points(self.device)
        # PARC: a Python float timestep times an int32 tensor of steps, in float32.
        self.control_dt = control_dt
        self.tar_offsets = control_dt * torch.tensor(TAR_OBS_STEPS, dtype=torch.int32, device=self.device)
        self.shapes = observation_shapes(character)
        self.size = observation_size(character)

    def motion_time(self, motion: torch.Tensor, start_fraction: float, steps: torch.Tensor) -> torch.Tensor:
        """PARC's motion time `steps` control steps after a reset at `start_fraction` of the motion:
        float32(control_dt) * steps (an int32 tensor) plus float32 length * float32 fraction."""
        start = self.table.length[motion] * torch.tensor(start_fraction, dtype=torch.float32, device=self.device)
        return self.control_dt * steps + start

    def compute(self, state: CharacterState, motion: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Observations [N, size] (float32) of N characters following motions `motion` at `time`."""
        n = state.root_pos.shape[0]
        root_pos, root_rot = state.root_pos, state.root_rot
        hinv = tq.heading_inv(root_rot)
        joint_rot = self.kin.dof_to_joint_rot(state.dof)
        key = self.kin.body_positions(root_pos, root_rot, joint_rot)[:, self.key_bodies]
        char = [tq.tan_norm(tq.mul(hinv, root_rot)), tq.rotate(hinv, state.root_vel),
                tq.rotate(hinv, state.root_ang_vel), tq.tan_norm(joint_rot).reshape(n, -1), state.dof_vel,
                tq.rotate(hinv[:, None], key - root_pos[:, None]).reshape(n, -1)]

        S = len(TAR_OBS_STEPS)
        tar_time = (time[:, None] + self.tar_offsets).reshape(-1)
        t_pos, t_rot, t_joint, t_contacts = self.table.frame(motion.repeat_interleave(S), tar_time)
        t_key = self.kin.body_positions(t_pos, t_rot, t_joint)[:, self.key_bodies].reshape(n, S, -1, 3)
        t_pos, t_rot, t_joint = t_pos.reshape(n, S, 3), t_rot.reshape(n, S, 4), t_joint.reshape(n, S, -1, 4)
        h = hinv[:, None].expand(n, S, 4)
        rel_root = tq.rotate(h, t_pos - root_pos[:, None])
        rel_key = tq.rotate(h[:, :, None], t_key - t_pos[:, :, None]) + rel_root[:, :, None]
        tar = torch.cat([rel_root, tq.tan_norm(tq.mul(h, t_rot)), tq.tan_norm(t_joint).reshape(n, S, -1),
                         rel_key.reshape(n, S, -1)], dim=-1)

        heading = tq.heading(root_rot)
        pts = self.rays[None].expand(n, -1, -1)
        pts = tq.rotate_2d(pts, heading[:, None].expand(n, pts.shape[1])) + root_pos[:, None, :2]
        rays = (self.terrain.height(motion, pts) - root_pos[:, 2:3]).clamp(MIN_OBS_H, MAX_OBS_H)

        return torch.cat(char + [tar.reshape(n, -1), t_contacts.reshape(n, -1), state.contacts, rays], dim=-1)
