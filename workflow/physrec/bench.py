"""Benchmark: the recorder's throughput against the raw simulator, measured in the same run.

Raw: the batch's world stepped by one ``mujoco.rollout`` call over the whole horizon
(fixed controls, no Python between steps) with the same environments and threads.
Recorder: :func:`physrec.recording.record_batch` on the same motions (tracker, FK,
termination checks and bookkeeping at every control step). Machines are shared and
noisy, so only the ratio is meaningful.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import mujoco
import numpy as np

from physrec.motion.character import Character
from physrec.demo import demo_motions
from physrec.recording import BatchMotion, RecordSettings, build_reference, build_world, record_batch
from physrec.sim.mujoco import MujocoBatchSim
from physrec.trackers.pd import PDTracker


def bench_motions(envs: int) -> list[BatchMotion]:
    """`envs` copies of the demo motions that run their full length (standing and waving)."""
    demo = demo_motions()
    keep = ["stand_flat", "wave_flat", "stand_step_top"]
    return [BatchMotion(f"{keep[i % len(keep)]}_{i}", demo[keep[i % len(keep)]].motion, demo[keep[i % len(keep)]].terrain)
            for i in range(envs)]


def raw_rate(character: Character, motions: list[BatchMotion], settings: RecordSettings, threads: int,
             control_steps: int) -> float:
    """Physics steps per second of the bare simulator doing the same work as the recorder.

    Same world, initial states and PD targets (the reference one control step ahead, held
    over the substeps), all in one rollout call with no Python between steps.
    """
    tiled, boxes = build_world(motions)
    ref = build_reference(character, motions, tiled.offsets)
    n, dt, sub = len(motions), 1.0 / settings.physics.control_hz, settings.physics.substeps
    idx = np.arange(n)
    pose = ref.pose(idx, np.zeros(n))
    qpos = character.pose_to_qpos(pose.root_pos, pose.root_rot, pose.joint_rot)
    times = np.arange(1, control_steps + 1) * dt
    targets = character.joint_rot_to_dof(ref.pose(np.repeat(idx, control_steps), np.tile(times, n)).joint_rot)
    controls = np.repeat(character.clip_action(targets).reshape(n, control_steps, -1), sub, axis=1)
    with MujocoBatchSim(character, boxes, settings.physics, threads) as sim:
        states, _ = sim.make_states(qpos, np.zeros((n, character.nv)))
        start = time.perf_counter()
        sim._rollout.rollout(sim.model, sim._datas, states, controls, nstep=control_steps * sub)
        wall = time.perf_counter() - start
    return n * control_steps * sub / wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envs", type=int, default=48, help="environments (motions) in the batch")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5, help="best of this many runs of each")
    a = p.parse_args(argv)
    character = Character.load()
    settings = RecordSettings(start_fractions=())
    motions = bench_motions(a.envs)
    horizon = int(round(max(m.motion.duration for m in motions) * settings.physics.control_hz))
    raw, best = 0.0, None
    for _ in range(a.repeats):  # interleaved, best of each: the machine's noise hits both alike
        raw = max(raw, raw_rate(character, motions, settings, a.threads, horizon))
        rec = record_batch(motions, character, PDTracker(), settings, a.threads)
        if best is None or rec.wall_seconds < best.wall_seconds:
            best = rec
    assert best is not None
    rate = best.sim_steps / best.wall_seconds
    motion_seconds = sum(x.end_time - x.start_time for x in best.attempts)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"{platform.system()} {platform.release()}, MuJoCo {mujoco.__version__}")
    print(f"batch: {a.envs} environments, {a.threads} threads, {settings.physics.physics_hz} Hz physics, "
          f"{settings.physics.control_hz} Hz control")
    print(f"raw MuJoCo (rollout, no Python between steps): {raw:,.0f} physics steps/s")
    print(f"recorder (pd tracker, termination, bookkeeping): {rate:,.0f} physics steps/s, "
          f"{motion_seconds / best.wall_seconds:,.1f} motion-seconds recorded per wall-second")
    print(f"ratio recorder/raw: {rate / raw:.2f}")


if __name__ == "__main__":
    main()
