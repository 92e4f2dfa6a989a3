"""The host memory a record job needs, from its plan, so that Snakemake (and SLURM) reserve it.

What grows with a batch: the recorder's buffers, dense [environments x the pass's longest
attempt] for each pass (host_pass, device_pass), and every finished attempt, which the job keeps
until it writes rollouts.h5. A frame of an attempt holds qpos, qvel, contacts, actions and
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


def record_job_mb(durations: list[float], control_hz: int, start_fractions: list[float], backend: str,
                  obs_floats: int = 0) -> int:
    """Megabytes a record job of motions of these `durations` (seconds) needs. `obs_floats`:
    the observation's size when it is saved (0 otherwise)."""
    if not durations:
        return BASE_MB.get(backend, BASE_MB["mujoco"])
    frame = frame_bytes(obs_floats)
    longest = max(durations) * control_hz + 2
    buffers = min(len(durations) * longest * frame, PASS_BUDGET_BYTES + longest * frame)  # one pass group's
    # every pass's attempts, kept until written: a later start retries what is left of a motion
    kept = sum(durations) * control_hz * (1 + sum(1 - f for f in start_fractions)) * frame
    extra = LEARNED_MB if obs_floats else 0
    return int(BASE_MB.get(backend, BASE_MB["mujoco"]) + extra + SAFETY * (buffers + kept) / 1e6)
