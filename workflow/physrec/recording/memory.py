"""The host memory a record job needs, from its plan, so that Snakemake (and SLURM) reserve it.

What grows with a batch: the recorder's buffers, dense [environments x the pass's longest
attempt] for each pass (host_pass, device_pass), and every finished attempt, which the job keeps
until it writes rollouts.h5. A frame of an attempt holds qpos, qvel, contacts, actions and
errors (about 1 kB) and, for a learned tracker with record.save_obs, its observation (float32).
"""

from __future__ import annotations

FRAME_BYTES = 1024
BASE_MB = {"mujoco": 1500, "mujoco_warp": 4000}  # Python, MuJoCo (and Warp), torch, the worlds
LEARNED_MB = 1000  # torch and a policy's weights, with the observation's tables
SAFETY = 1.5  # array copies while attempts are collected and written


def record_job_mb(durations: list[float], control_hz: int, start_fractions: list[float], backend: str,
                  obs_floats: int = 0) -> int:
    """Megabytes a record job of motions of these `durations` (seconds) needs. `obs_floats`:
    the observation's size when it is saved (0 otherwise)."""
    if not durations:
        return BASE_MB.get(backend, BASE_MB["mujoco"])
    frame = FRAME_BYTES + 4 * obs_floats
    longest = max(durations) * control_hz + 2
    buffers = len(durations) * longest * frame  # one pass's dense buffers
    # every pass's attempts, kept until written: a later start retries what is left of a motion
    kept = sum(durations) * control_hz * (1 + sum(1 - f for f in start_fractions)) * frame
    extra = LEARNED_MB if obs_floats else 0
    return int(BASE_MB.get(backend, BASE_MB["mujoco"]) + extra + SAFETY * (buffers + kept) / 1e6)
