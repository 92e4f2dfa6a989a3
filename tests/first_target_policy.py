"""A policy that needs no training: PD targets from the observation's first target frame.

PARC's observation holds the reference pose one control step ahead (its first target frame,
t + 1/30 s) as 14 joint tan_norms. Turning those back into DOF gives the same targets as the
`pd` tracker, so an exported program of this module must record what `pd` records. Shared by
the tests; it uses torch only, so torch.export can trace it.
"""

import torch

from physrec.motion.character import BALL, HINGE, Character
from physrec.observations.parc import observation_shapes


def _matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> quaternions (x, y, z, w), w >= 0."""
    w = torch.sqrt(torch.clamp(1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2], min=0)) / 2
    x = torch.copysign(torch.sqrt(torch.clamp(1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], min=0)) / 2,
                       m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(torch.sqrt(torch.clamp(1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], min=0)) / 2,
                       m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(torch.sqrt(torch.clamp(1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], min=0)) / 2,
                       m[..., 1, 0] - m[..., 0, 1])
    q = torch.stack([x, y, z, w], dim=-1)
    return q / q.norm(dim=-1, keepdim=True)


class FirstTargetFrame(torch.nn.Module):
    def __init__(self, character: Character) -> None:
        super().__init__()
        char_size = observation_shapes(character)["char_obs"][0]
        self.joints = slice(char_size + 9, char_size + 9 + 6 * character.num_joints)
        # (joint, kind, hinge axis) of every joint with DOF, in PARC's DOF order.
        self.layout = [(j, t, character.hinge_axes[j].tolist()) for j, t in enumerate(character.joint_types)
                       if t in (BALL, HINGE)]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tn = obs[:, self.joints].reshape(obs.shape[0], -1, 6)
        tan, norm = tn[..., 0:3], tn[..., 3:6]
        m = torch.stack([tan, torch.cross(norm, tan, dim=-1), norm], dim=-1)  # columns R x, R y, R z
        q = _matrix_to_quat(m)
        dof = []
        for j, kind, axis in self.layout:
            qj = q[:, j]
            if kind == BALL:
                s = qj[:, :3].norm(dim=-1, keepdim=True)
                angle = 2 * torch.atan2(s, qj[:, 3:4])
                dof.append(qj[:, :3] * torch.where(s > 1e-8, angle / torch.clamp(s, min=1e-12), 2.0))
            else:
                a = torch.tensor(axis, dtype=obs.dtype)
                dof.append((2 * torch.atan2((qj[:, :3] * a).sum(-1), qj[:, 3]))[:, None])
        return torch.cat(dof, dim=-1)
