"""PARC's termination rules on torch tensors: termination.check for a control loop on a device."""

from __future__ import annotations

import torch

from physrec.motion import quat_torch as tq
from physrec.motion.termination import (BODY_OFFSET, NON_FINITE_STATE, OK, ROOT_POSITION, ROOT_ROTATION,
                                        TerminationSettings)


def check(sim_body_pos: torch.Tensor, sim_root_rot: torch.Tensor, ref_body_pos: torch.Tensor,
          ref_root_rot: torch.Tensor, settings: TerminationSettings,
          limits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(code [N], body [N], errors [N, 4]) as termination.check; `limits` [B-1] holds
    settings.body_offset_limits on the tensors' device."""
    root_err = (sim_body_pos[:, 0] - ref_body_pos[:, 0]).norm(dim=-1)
    rot_err = tq.angle_between(sim_root_rot, ref_root_rot)
    sim_off = sim_body_pos[:, 1:] - sim_body_pos[:, :1]
    ref_off = ref_body_pos[:, 1:] - ref_body_pos[:, :1]
    ratio = (sim_off - ref_off).norm(dim=-1) / limits
    worst_ratio, worst = ratio.max(dim=-1)
    mean_pos = (sim_body_pos - ref_body_pos).norm(dim=-1).mean(dim=-1)
    code = torch.full_like(worst, OK)
    code = torch.where(worst_ratio > 1.0, BODY_OFFSET, code)
    code = torch.where(rot_err > settings.root_rot_error, ROOT_ROTATION, code)
    code = torch.where(root_err > settings.root_pos_error, ROOT_POSITION, code)
    finite = torch.isfinite(sim_body_pos).all(dim=-1).all(dim=-1) & torch.isfinite(sim_root_rot).all(dim=-1)
    code = torch.where(finite, code, NON_FINITE_STATE)
    body = torch.where(code == BODY_OFFSET, worst + 1, -1)
    return code, body, torch.stack([root_err, rot_err, worst_ratio, mean_pos], dim=-1)
