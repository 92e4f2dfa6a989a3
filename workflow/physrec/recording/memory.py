"""The host memory a record job needs, from its plan, so that Snakemake (and SLURM) reserve it.

What grows with a batch: the recorder's buffers, dense [environments x the pass's longest
attempt] for each pass group (host_pass, device_pass), and the group's finished attempts until
they are written to rollouts.h5. A frame of an attempt holds qpos, qvel, contacts, actions and
errors (about 1 kB) and, for a learned tracker with record.save_obs, its observation (float32).
"""

from __future__ import annotations

import numpy as np

FRAME_BYTES = 1024
# A pass's dense buffers are cut to this: its environments go in consecutive groups (plan order)
# whose [environments x longest attempt] frames fit, one group at least one environment.
PASS_BUDGET_BYTES = 1_000_000_000
BASE_MB = {"mujoco": 1500, "mujoco_warp": 4000}  # Python, MuJoCo (and Warp), torch, the worlds
LEARNED_MB = 1000  # torch and a policy's weights, with the observation's tables
SAFETY = 1.5  # array copies while attempts are collected and written


def frame_bytes(obs_floats: int) -> int:
    return FRAME_BYTES + 4 * obs_floats


def pass_groups(envs: np.ndarray, steps: np.ndarray, frame: int, budget: int | None = None) -> list[np.ndarray]:
    """`envs` (plan order) in consecutive groups whose dense buffers, [group x its longest attempt
    of `steps` control steps] frames of `frame` bytes, fit `budget`: a long motion among short ones
    no longer makes every environment hold as many frames as it does."""
    budget = PASS_BUDGET_BYTES if budget is None else budget
    groups, start, longest = [], 0, 0
    for i, k in enumerate(np.asarray(steps) + 1):
        if i > start and (i - start + 1) * max(longest, k) * frame > budget:
            groups.append(envs[start:i])
            start, longest = i, 0
        longest = max(longest, int(k))
    groups.append(envs[start:])
    return groups


def recording_bytes(durations: list[float], control_hz: int, obs_floats: int = 0) -> float:
    """Bytes a batch's recording holds at most above the job's base: one pass group's dense
    buffers and the attempts cut out of them (no more frames than the buffers), until the
    writer has them; record_batch hands each group's attempts on as the group ends. `obs_floats`:
    the observation's size when it is saved (0 otherwise)."""
    frame = frame_bytes(obs_floats)
    longest = max(durations) * control_hz + 2
    buffers = min(len(durations) * longest * frame, PASS_BUDGET_BYTES + longest * frame)  # one pass group's
    return SAFETY * 2 * buffers


def reference_bytes(motion_frames: int, num_joints: int) -> int:
    """Bytes of a batch's reference (motion.reference.ReferenceSet: root position, rotation and
    joint rotations in float64), three copies while it is built. At PARC's 30 fps a 64 x 10-s
    batch's is about 30 MB, within BASE_MB."""
    return 3 * 8 * (7 + 4 * num_joints) * motion_frames


def record_job_mb(durations: list[float], control_hz: int, backend: str, obs_floats: int = 0) -> int:
    """Megabytes a record job of motions of these `durations` (seconds) needs (see recording_bytes)."""
    if not durations:
        return BASE_MB.get(backend, BASE_MB["mujoco"])
    extra = LEARNED_MB if obs_floats else 0
    return int(BASE_MB.get(backend, BASE_MB["mujoco"]) + extra + recording_bytes(durations, control_hz,
                                                                                 obs_floats) / 1e6)
