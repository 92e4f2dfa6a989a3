"""The character's kinematic model on torch tensors: PARC DOF -> joint rotations -> body positions.

PARC computes key-body positions for its observation from this kinematic model (root +
DOF through forward kinematics), not from the simulator's rigid bodies, so the
observation does the same. Built from :class:`~physrec.motion.character.Character`,
which stays the one description of the joint layout.

Small batched tensor operations cost their launch, not their size, so everything here
is a handful of whole-batch operations: bodies are processed level by level of the tree
and gathered with ``index_select`` (several times cheaper than fancy indexing on CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from physrec.motion import quat_torch as tq
from physrec.motion.character import BALL, FIXED, HINGE, Character


class TorchKinematics:
    """Batched FK and DOF conversions of one character, in float32 on one device."""

    def __init__(self, character: Character, device: torch.device | str = "cpu") -> None:
        self.character = character
        self.device = dev = torch.device(device)

        def index(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=dev)

        types, slices = character.joint_types, character.dof_slices
        ball = [j for j, t in enumerate(types) if t == BALL]
        hinge = [j for j, t in enumerate(types) if t == HINGE]
        fixed = [j for j, t in enumerate(types) if t == FIXED]
        self.ball_dof = index([d for j in ball for d in range(slices[j].start, slices[j].stop)])
        self.hinge_dof = index([slices[j].start for j in hinge])
        # Cast on the device for states of either precision: a host copy per call would wait for the GPU.
        self._hinge_axes64 = torch.as_tensor(character.hinge_axes[hinge], dtype=torch.float64, device=dev)
        self.hinge_axes = self._hinge_axes64.float()
        self.num_fixed = len(fixed)
        # Joint rotations are built as [ball..., hinge..., fixed...]; this puts them in joint order.
        built = ball + hinge + fixed
        self.joint_order = index([built.index(j) for j in range(character.num_joints)])

        # Bodies in order of depth (the character's levels): FK grows the tree one level per
        # step, and each level's parents are already there.
        parents = [int(p) for p in character.parents]
        order = [0] + [int(b) for bodies, _ in character.levels for b in bodies]
        at = {b: i for i, b in enumerate(order)}
        self.levels = []  # (first, last + 1) of the level's block in that order, its parents, its joints
        for bodies, _ in character.levels:
            first = at[int(bodies[0])]
            self.levels.append((first, first + len(bodies), index([at[parents[b]] for b in bodies]),
                                index([int(b) - 1 for b in bodies])))
        self.offsets = torch.as_tensor(character.offsets[order[1:]], dtype=torch.float32, device=dev)
        self.parent_at = index([at[parents[b]] for b in order[1:]])
        self.body_order = index([at[b] for b in range(character.num_bodies)])
        self._at = at
        # MuJoCo's state layout (Character's index arrays): where each joint sits in qpos/qvel.
        L = character._layout
        self.ball, self.hinge = index(L.ball.tolist()), index(L.hinge.tolist())
        self.ball_qpos, self.hinge_qpos = index(L.ball_qpos.tolist()), index(L.hinge_qpos.tolist())
        self.dof_qvel = index(L.dof_qvel.tolist())

    def body_index(self, names: tuple[str, ...]) -> list[int]:
        missing = [n for n in names if n not in self.character.body_names]
        if missing:
            raise ValueError(f"the character has no bod{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
        return [self.character.body_names.index(n) for n in names]

    def dof_to_joint_rot(self, dof: torch.Tensor) -> torch.Tensor:
        """[N, D] PARC DOF -> [N, J, 4] local joint rotations (identity for fixed joints)."""
        n = dof.shape[0]
        ball = tq.exp_map_to_quat(dof.index_select(1, self.ball_dof).reshape(n, -1, 3))
        hinge = tq.axis_angle_to_quat(self.hinge_axes.expand(n, -1, -1), dof.index_select(1, self.hinge_dof))
        fixed = torch.zeros((n, self.num_fixed, 4), dtype=dof.dtype, device=dof.device)
        fixed[..., 3] = 1
        return torch.cat([ball, hinge, fixed], dim=1).index_select(1, self.joint_order)

    def select(self, bodies: list[int]) -> torch.Tensor:
        """The `select` argument of :meth:`body_positions` for these body indices."""
        return torch.tensor([self._at[b] for b in bodies], dtype=torch.long, device=self.device)

    def body_positions(self, root_pos: torch.Tensor, root_rot: torch.Tensor, joint_rot: torch.Tensor,
                       select: torch.Tensor | None = None) -> torch.Tensor:
        """World positions [N, B, 3] of all bodies (or of :meth:`select`'s): pos_j = pos_parent +
        rot_parent * offset_j and rot_j = rot_parent * joint_rot_j.

        Rotations compose one level of the tree at a time; then every offset is rotated by
        its parent's rotation in one call, and positions add up level by level. Quaternion
        products as in PARC, not rotation matrices: a reference's quaternions are not
        normalised, and the two disagree by (1 - |q|^2) x offset for non-unit ones.
        """
        n, B = root_pos.shape[0], len(self.body_order)
        rot = torch.empty((n, B, 4), dtype=root_rot.dtype, device=root_rot.device)
        rot[:, 0] = root_rot
        for first, end, parents, joints in self.levels:
            rot[:, first:end] = tq.mul(rot.index_select(1, parents), joint_rot.index_select(1, joints))
        offsets = tq.rotate(rot.index_select(1, self.parent_at), self.offsets.expand(n, -1, -1))
        pos = torch.empty((n, B, 3), dtype=root_pos.dtype, device=root_pos.device)
        pos[:, 0] = root_pos
        for first, end, parents, _ in self.levels:
            pos[:, first:end] = pos.index_select(1, parents) + offsets[:, first - 1:end - 1]
        return pos.index_select(1, self.body_order if select is None else select)

    # -- MuJoCo's state (Character.qpos_to_pose, joint_rot_to_dof and parc_state on a device) --
    def qpos_to_pose(self, qpos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[N, nq] -> root_pos [N, 3], root_rot [N, 4], joint_rot [N, J, 4] (x, y, z, w, normalised)."""
        n = qpos.shape[0]
        joint = torch.zeros((n, self.character.num_joints, 4), dtype=qpos.dtype, device=qpos.device)
        joint[..., 3] = 1
        joint[:, self.ball] = tq.from_mujoco(qpos.index_select(1, self.ball_qpos).reshape(n, -1, 4))
        axes = self._hinge_axes64.to(device=qpos.device, dtype=qpos.dtype)
        joint[:, self.hinge] = tq.axis_angle_to_quat(axes.expand(n, -1, -1), qpos.index_select(1, self.hinge_qpos))
        return qpos[:, 0:3], tq.normalize(tq.from_mujoco(qpos[:, 3:7])), tq.normalize(joint)

    def joint_rot_to_dof(self, joint_rot: Tensor) -> Tensor:
        """[N, J, 4] local rotations -> [N, D] PARC DOF (exp map for ball joints, angle for hinges)."""
        n = joint_rot.shape[0]
        dof = torch.zeros((n, self.character.num_dof), dtype=joint_rot.dtype, device=joint_rot.device)
        dof[:, self.ball_dof] = tq.quat_to_exp_map(joint_rot.index_select(1, self.ball)).reshape(n, -1)
        axes = self._hinge_axes64.to(device=joint_rot.device, dtype=joint_rot.dtype)
        dof[:, self.hinge_dof] = tq.hinge_angle(joint_rot.index_select(1, self.hinge), axes)
        return dof

    def parc_state(self, qpos: Tensor, qvel: Tensor,
                   pose: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """MuJoCo state -> PARC's simulator quantities (Character.parc_state); `pose`:
        qpos_to_pose(qpos), where the caller has it already."""
        n = qpos.shape[0]
        _, root_rot, joint_rot = self.qpos_to_pose(qpos) if pose is None else pose
        dof = torch.zeros((n, self.character.num_dof), dtype=qpos.dtype, device=qpos.device)
        dof[:, self.ball_dof] = tq.quat_to_exp_map(joint_rot.index_select(1, self.ball)).reshape(n, -1)
        dof[:, self.hinge_dof] = qpos.index_select(1, self.hinge_qpos)
        return {"root_pos": qpos[:, 0:3], "root_rot": root_rot, "root_vel": qvel[:, 0:3],
                "root_ang_vel": tq.rotate(root_rot, qvel[:, 3:6]), "dof": dof,
                "dof_vel": qvel.index_select(1, self.dof_qvel)}
