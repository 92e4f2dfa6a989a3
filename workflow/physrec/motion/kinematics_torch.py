"""The character's kinematic model on torch tensors: PARC DOF -> joint rotations -> body positions.

PARC computes key-body positions for its observation from this kinematic model (root +
DOF through forward kinematics), not from the simulator's rigid bodies, so the
observation does the same. Built from :class:`~physrec.motion.character.Character`,
which stays the one description of the joint layout.
"""

from __future__ import annotations

import torch

from physrec.motion import quat_torch as tq
from physrec.motion.character import BALL, HINGE, Character


class TorchKinematics:
    """Batched FK and DOF conversions of one character, in float32 on one device."""

    def __init__(self, character: Character, device: torch.device | str = "cpu") -> None:
        self.character = character
        self.device = torch.device(device)
        self.parents = [int(p) for p in character.parents]
        self.offsets = torch.as_tensor(character.offsets, dtype=torch.float32, device=self.device)
        self.hinge_axes = torch.as_tensor(character.hinge_axes, dtype=torch.float32, device=self.device)
        self.num_bodies = character.num_bodies

    def body_index(self, names: tuple[str, ...]) -> list[int]:
        missing = [n for n in names if n not in self.character.body_names]
        if missing:
            raise ValueError(f"the character has no bod{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
        return [self.character.body_names.index(n) for n in names]

    def dof_to_joint_rot(self, dof: torch.Tensor) -> torch.Tensor:
        """[N, D] PARC DOF -> [N, J, 4] local joint rotations (identity for fixed joints)."""
        rots = []
        identity = torch.zeros(dof.shape[:-1] + (4,), dtype=dof.dtype, device=dof.device)
        identity[..., 3] = 1
        for j, (t, s) in enumerate(zip(self.character.joint_types, self.character.dof_slices)):
            if t == BALL:
                rots.append(tq.exp_map_to_quat(dof[..., s]))
            elif t == HINGE:
                axis = self.hinge_axes[j].expand(dof.shape[:-1] + (3,))
                rots.append(tq.axis_angle_to_quat(axis, dof[..., s.start]))
            else:
                rots.append(identity)
        return torch.stack(rots, dim=-2)

    def body_positions(self, root_pos: torch.Tensor, root_rot: torch.Tensor, joint_rot: torch.Tensor) -> torch.Tensor:
        """World body positions [..., B, 3]: pos_j = pos_parent + rot_parent * offset_j."""
        pos, rot = [root_pos], [root_rot]
        for b in range(1, self.num_bodies):
            p = self.parents[b]
            pos.append(pos[p] + tq.rotate(rot[p], self.offsets[b].expand_as(pos[p])))
            rot.append(tq.mul(rot[p], joint_rot[..., b - 1, :]))
        return torch.stack(pos, dim=-2)
