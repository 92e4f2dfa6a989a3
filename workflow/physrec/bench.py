"""Benchmark: the recorder's throughput against the raw simulator, measured in the same run.

Open loop (``--tracker pd``): raw = the batch's world stepped by one ``mujoco.rollout``
call over the whole horizon with the recorder's PD targets, no Python between steps;
recorder = :func:`physrec.recording.record_batch` on the same motions (tracker, FK,
termination checks and bookkeeping at every control step).

Closed loop (``--tracker parc``): a PARC-size policy (PARC's checkpoint layout, random
weights) drives the character. Three rates on the same batch and the same physics (the
recorder's own actions replayed): raw (one rollout call), simulator + bare policy
(one rollout call and one policy forward per control step, on the recorded
observations) and the recorder (observation, policy, termination, bookkeeping).

Machines are shared and noisy: the runs interleave, the best of each is kept, and only
the ratios are meaningful. Terminations are switched off (limits of 1e9), so every
environment runs its whole motion whatever the tracker does; the checks still run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import mujoco
import numpy as np

from physrec.demo import demo_motions
from physrec.formats.motion_file import read_motion_file
from physrec.motion.character import Character
from physrec.motion.termination import TerminationSettings
from physrec.recording import BatchMotion, BatchRecording, RecordSettings, open_backend, record_batch
from physrec.sim.backend import BackendSpec
from physrec.trackers.base import Tracker
from physrec.trackers.pd import PDTracker

DEMO_KEEP = ("stand_flat", "wave_flat", "stand_step_top")  # demo motions that run their full length under pd
NO_TERMINATION = TerminationSettings(root_pos_error=1e9, root_rot_error=1e9, body_offset_limits=(1e9,) * 14)


def bench_motions(envs: int, files: list[Path] | None = None) -> list[BatchMotion]:
    """`envs` environments cycling through the given PARC motion files, or through demo motions."""
    if files:
        loaded = [(p.stem, read_motion_file(p)) for p in files]
    else:
        demo = demo_motions()
        loaded = [(n, demo[n]) for n in DEMO_KEEP]
    return [BatchMotion(f"{loaded[i % len(loaded)][0]}_{i}", loaded[i % len(loaded)][1].motion,
                        loaded[i % len(loaded)][1].terrain) for i in range(envs)]  # type: ignore[arg-type]


class _Replay:
    """The recorder's physics again, without the recorder: same worlds, initial states and actions."""

    def __init__(self, spec: BackendSpec, character: Character, motions: list[BatchMotion],
                 settings: RecordSettings, rec: BatchRecording) -> None:
        self.sim = open_backend(spec, character, motions, settings)
        steps = min(a.steps for a in rec.attempts)
        self.actions = np.stack([a.actions[:steps] for a in rec.attempts]).astype(np.float64)  # [n, K, D]
        self.obs = None if rec.attempts[0].obs is None else np.stack([a.obs[:steps] for a in rec.attempts])
        self.env = np.array([a.motion for a in rec.attempts])
        self.qpos0 = np.stack([a.qpos[0] for a in rec.attempts])
        self.qpos0[:, :2] -= rec.tiled.offsets[self.env]  # back into each motion's own frame
        self.qvel0 = np.stack([a.qvel[0] for a in rec.attempts])
        self.steps, self.sub = steps, settings.physics.substeps

    @property
    def physics_steps(self) -> int:
        return len(self.actions) * self.steps * self.sub

    def raw(self) -> float:
        """Seconds for the whole horizon in one call of the backend."""
        self.sim.reset(self.env, self.qpos0, self.qvel0)
        start = time.perf_counter()
        self.sim.step(self.env, self.actions)
        return time.perf_counter() - start

    def with_policy(self, policy) -> float:
        """Seconds for the horizon as a closed loop would run it: per control step, one backend
        call for every environment and one policy forward on the batch's observations."""
        import torch
        obs = torch.as_tensor(self.obs)
        self.sim.reset(self.env, self.qpos0, self.qvel0)
        start = time.perf_counter()
        with torch.inference_mode():
            for k in range(self.steps):
                policy(obs[:, k])
                self.sim.step(self.env, self.actions[:, k:k + 1])
        return time.perf_counter() - start


def _tracker(kind: str, character: Character, threads: int) -> Tracker:
    """pd, or a PARC-size actor (PARC's checkpoint layout with random weights)."""
    if kind == "pd":
        return PDTracker()
    from physrec.observations import observation_size
    from physrec.trackers.parc_policy import build_actor, check_state, random_state_dict
    from physrec.trackers.policy import PolicyTracker, limit_torch_threads
    limit_torch_threads(threads)
    size = observation_size("parc", character)
    state = check_state(random_state_dict(size, character.num_dof), size, character.num_dof, Path("<random>"))
    actor = build_actor(state)
    return PolicyTracker("parc", actor, "parc", f"parc: PARC-size actor {'x'.join(map(str, actor.widths))}, "
                                                "random weights")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envs", type=int, default=48, help="environments (motions) in the batch")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5, help="best of this many runs of each")
    p.add_argument("--tracker", choices=("pd", "parc"), default="pd")
    p.add_argument("--backend", choices=("mujoco", "mujoco_warp"), default="mujoco")
    p.add_argument("--device", default="cuda", help="mujoco_warp: cuda, cuda:N or cpu")
    p.add_argument("--motions", nargs="*", type=Path, default=[],
                   help="PARC motion files to cycle through (default: demo motions that pd tracks)")
    a = p.parse_args(argv)
    character = Character.load()
    closed = a.tracker != "pd"
    settings = RecordSettings(start_fractions=(), termination=NO_TERMINATION)
    motions = bench_motions(a.envs, a.motions)
    tracker = _tracker(a.tracker, character, a.threads)
    spec = BackendSpec(a.backend, a.device if a.backend == "mujoco_warp" else "cpu", a.threads)
    rec = record_batch(motions, character, tracker, settings, spec)  # warm-up, and the actions to replay
    replay = _Replay(spec, character, motions, settings, rec)
    raw = loop = recorder = float("inf")
    for _ in range(a.repeats):  # interleaved, best of each: the machine's noise hits all alike
        raw = min(raw, replay.raw())
        if closed:
            loop = min(loop, replay.with_policy(tracker.policy))  # type: ignore[attr-defined]
        recorder = min(recorder, record_batch(motions, character, tracker, settings, spec).wall_seconds)
    physics = rec.sim_steps
    motion_seconds = sum(x.end_time - x.start_time for x in rec.attempts)
    where = ", ".join(sorted({m.name.rsplit("_", 1)[0] for m in motions}))
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"{platform.system()} {platform.release()}, MuJoCo {mujoco.__version__}")
    print(f"batch: {a.envs} environments ({where}), {a.threads} threads, {settings.physics.physics_hz} Hz physics, "
          f"{settings.physics.control_hz} Hz control, {tracker.describe()}")
    print(f"backend: {rec.provenance}")
    print(f"raw {a.backend} (one call, no Python between steps): {replay.physics_steps / raw:,.0f} physics steps/s")
    if closed:
        print(f"{a.backend} + bare policy forward (one call and one forward per control step): "
              f"{replay.physics_steps / loop:,.0f} physics steps/s")
    print(f"recorder ({a.tracker} tracker{', observation' if closed else ''}, termination, bookkeeping): "
          f"{physics / recorder:,.0f} physics steps/s, {motion_seconds / recorder:,.1f} motion-seconds recorded "
          f"per wall-second")
    print(f"ratio recorder/raw: {(physics / recorder) / (replay.physics_steps / raw):.2f}")
    if closed:
        print(f"ratio recorder/(MuJoCo + policy): {(physics / recorder) / (replay.physics_steps / loop):.2f}")


if __name__ == "__main__":
    main()
