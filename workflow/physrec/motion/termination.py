"""PARC's early-termination rules and the per-step tracking errors recorded with them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physrec.motion import quat

# PARC's pose_termination_dist for bodies 1..14 (torso ... left_foot), metres.
PARC_BODY_OFFSET_LIMITS = (0.7, 1.0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 1.0, 1.2, 10.0, 1.0, 1.2, 10.0)

OK, ROOT_POSITION, ROOT_ROTATION, BODY_OFFSET, BAD_ACTION, NON_FINITE_STATE = 0, 1, 2, 3, 4, 5
ERROR_COLUMNS = ("root_pos_error", "root_rot_error", "body_offset_ratio", "mean_body_pos_error")


@dataclass(frozen=True)
class TerminationSettings:
    root_pos_error: float = 0.6  # metres, 3-D distance between simulated and reference root
    root_rot_error: float = 1.3089969  # radians (75 degrees)
    body_offset_limits: tuple[float, ...] = field(default=PARC_BODY_OFFSET_LIMITS)
    end_tolerance: float = 2.0 / 30.0  # an attempt that ends this close to the motion's end succeeded


@dataclass(frozen=True)
class TerminationCheck:
    code: np.ndarray  # [N] OK / ROOT_POSITION / ROOT_ROTATION / BODY_OFFSET
    body: np.ndarray  # [N] body index that exceeded its offset limit (-1 if none)
    errors: np.ndarray  # [N, 4] ERROR_COLUMNS
    body_ratio: np.ndarray  # [N, B-1] each non-root body's offset error / its limit


def check(sim_body_pos: np.ndarray, sim_root_rot: np.ndarray, ref_body_pos: np.ndarray,
          ref_root_rot: np.ndarray, settings: TerminationSettings) -> TerminationCheck:
    """PARC's compute_done with track_root: root position, root angle, per-body offsets.

    Body offsets are each body's position relative to the root in world axes, compared
    with the reference's; no heading alignment, as in PARC.
    """
    with np.errstate(invalid="ignore"):  # a diverged state's NaN is expected: it terminates below
        return _check(sim_body_pos, sim_root_rot, ref_body_pos, ref_root_rot, settings)


def _check(sim_body_pos: np.ndarray, sim_root_rot: np.ndarray, ref_body_pos: np.ndarray,
           ref_root_rot: np.ndarray, settings: TerminationSettings) -> TerminationCheck:
    limits = np.asarray(settings.body_offset_limits)
    root_err = np.linalg.norm(sim_body_pos[:, 0] - ref_body_pos[:, 0], axis=-1)
    rot_err = quat.angle_between(sim_root_rot, ref_root_rot)
    sim_off = sim_body_pos[:, 1:] - sim_body_pos[:, :1]
    ref_off = ref_body_pos[:, 1:] - ref_body_pos[:, :1]
    ratio = np.linalg.norm(sim_off - ref_off, axis=-1) / limits
    worst = np.argmax(ratio, axis=-1)
    worst_ratio = ratio[np.arange(len(worst)), worst]
    mean_pos = np.mean(np.linalg.norm(sim_body_pos - ref_body_pos, axis=-1), axis=-1)
    code = np.full(len(root_err), OK)
    code = np.where(worst_ratio > 1.0, BODY_OFFSET, code)
    code = np.where(rot_err > settings.root_rot_error, ROOT_ROTATION, code)
    code = np.where(root_err > settings.root_pos_error, ROOT_POSITION, code)
    # Last, since NaN fails every comparison above: a diverged simulation never counts as tracking.
    finite = np.isfinite(sim_body_pos).all(axis=(1, 2)) & np.isfinite(sim_root_rot).all(axis=-1)
    code = np.where(finite, code, NON_FINITE_STATE)
    body = np.where(code == BODY_OFFSET, worst + 1, -1)
    errors = np.stack([root_err, rot_err, worst_ratio, mean_pos], axis=-1)
    return TerminationCheck(code, body, errors, ratio)


def reason(code: int, body: int, body_names: tuple[str, ...]) -> str:
    if code == ROOT_POSITION:
        return "root_position"
    if code == ROOT_ROTATION:
        return "root_rotation"
    if code == BODY_OFFSET:
        return f"body_offset:{body_names[body]}"
    if code == BAD_ACTION:
        return "non_finite_action"
    if code == NON_FINITE_STATE:
        return "non_finite_state"
    return ""
