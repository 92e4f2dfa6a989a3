"""`physrec bench throughput`: the recorder's throughput against the raw simulator, measured in
the same run.

Open loop (`--tracker pd`): raw = the batch's world stepped with the recorder's PD targets,
every attempt to its own end, by one `mujoco.rollout` call per attempt length (no Python
between steps; until 2026-12-07 every attempt was cut to the shortest one's length);
recorder = physrec.recording.batch.record_batch on the same motions (tracker, FK,
termination checks and bookkeeping at every control step).

Closed loop (`--tracker parc`): a PARC-size policy (PARC's checkpoint layout, random
weights) drives the character. Three rates on the same batch and the same physics (the
recorder's own actions replayed): raw (one rollout call per attempt length), simulator +
bare policy (per control step, one rollout call and one policy forward for the environments
still running, on the recorded observations, in the recorder's chunks on the job's threads;
until 2026-12-08 in one call on one thread, and the recorder's policy too ran on one thread
here, unlike the record job's) and the recorder (observation, policy, termination, bookkeeping).

Machines are shared and noisy: the runs interleave, the best of each is kept, and only
the ratios are meaningful. Terminations are switched off (limits of 1e9), so every
environment runs its whole motion whatever the tracker does; the checks still run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from physrec.bench import add_backend_arguments, backend_spec, load_average, machine, write_json

from physrec.demo import demo_motions
from physrec.formats.motion_file import read_motion_file
from physrec.motion.character import Character
from physrec.motion.termination import TerminationSettings
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion, BatchRecording
from physrec.recording.plan import open_backend
from physrec.recording.settings import RecordSettings
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
    """The recorder's physics again, without the recorder: same worlds, initial states and actions,
    every attempt to its own end (so the same physics steps as the recorder's)."""

    def __init__(self, spec: BackendSpec, character: Character, motions: list[BatchMotion],
                 settings: RecordSettings, rec: BatchRecording) -> None:
        self.sim = open_backend(spec, character, motions, settings)
        self.lengths = np.array([a.steps for a in rec.attempts])
        K = int(self.lengths.max())
        self.actions = np.zeros((len(rec.attempts), K, character.num_dof))  # [n, K, D], zero past an end
        for i, a in enumerate(rec.attempts):
            self.actions[i, :a.steps] = a.actions
        self.obs = None
        if rec.attempts[0].obs is not None:
            self.obs = np.zeros((len(rec.attempts), K + 1, rec.attempts[0].obs.shape[1]), dtype=np.float32)
            for i, a in enumerate(rec.attempts):
                self.obs[i, :a.steps + 1] = a.obs
        self.env = np.array([a.motion for a in rec.attempts])
        self.qpos0 = np.stack([a.qpos[0] for a in rec.attempts])
        self.qpos0[:, :2] -= rec.tiled.offsets[self.env]  # back into each motion's own frame
        self.qvel0 = np.stack([a.qvel[0] for a in rec.attempts])
        self.sub = settings.physics.substeps

    @property
    def physics_steps(self) -> int:
        return int(self.lengths.sum()) * self.sub

    def raw(self) -> float:
        """Seconds for every attempt's horizon, one backend call per attempt length."""
        self.sim.reset(self.env, self.qpos0, self.qvel0)
        start = time.perf_counter()
        for k in np.unique(self.lengths):
            rows = self.lengths == k
            self.sim.step(self.env[rows], self.actions[rows, :k])
        return time.perf_counter() - start

    def with_policy(self, tracker) -> float:
        """Seconds for the horizons as a closed loop would run them: per control step, one backend
        call for the environments still running and one forward of the tracker's policy on their
        observations, in the recorder's chunks on the job's threads (PolicyTracker.act)."""
        import torch
        obs = torch.as_tensor(self.obs)
        self.sim.reset(self.env, self.qpos0, self.qvel0)
        start = time.perf_counter()
        with torch.inference_mode():
            for k in range(int(self.lengths.max())):
                rows = self.lengths > k
                tracker.act(SimpleNamespace(obs=obs[torch.as_tensor(rows), k]))
                self.sim.step(self.env[rows], self.actions[rows, k:k + 1])
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
    tracker = PolicyTracker("parc", actor, "parc", f"parc: PARC-size actor {'x'.join(map(str, actor.widths))}, "
                                                   "random weights")
    tracker.use_threads(threads)  # as the record job does
    return tracker


def measure(envs: int, a: argparse.Namespace, character: Character, tracker: Tracker) -> dict:
    """One batch size: the rates of raw stepping, simulator + bare policy (closed loop) and the
    recorder, best of `a.repeats` interleaved runs, and what they print."""
    closed = a.tracker != "pd"
    settings = RecordSettings(start_fractions=(), termination=NO_TERMINATION)
    motions = bench_motions(envs, a.motions)
    spec = backend_spec(a)
    rec = record_batch(motions, character, tracker, settings, spec)  # warm-up, and the actions to replay
    replay = _Replay(spec, character, motions, settings, rec)
    raw = loop = recorder = float("inf")
    for _ in range(a.repeats):  # interleaved, best of each: the machine's noise hits all alike
        raw = min(raw, replay.raw())
        if closed:
            loop = min(loop, replay.with_policy(tracker))
        recorder = min(recorder, record_batch(motions, character, tracker, settings, spec).wall_seconds)
    memory = replay.sim.memory()
    replay.sim.close()
    motion_seconds = sum(x.end_time - x.start_time for x in rec.attempts)
    out = {"envs": envs, "motions": sorted({m.name.rsplit("_", 1)[0] for m in motions}), "tracker": tracker.describe(),
           "backend": rec.provenance, "bytes_per_env": memory["per_env"],
           "raw_steps_per_s": replay.physics_steps / raw, "recorder_steps_per_s": rec.sim_steps / recorder,
           "motion_seconds_per_s": motion_seconds / recorder, "load_average": load_average()}
    out["recorder_over_raw"] = out["recorder_steps_per_s"] / out["raw_steps_per_s"]
    if closed:
        out["loop_steps_per_s"] = replay.physics_steps / loop
        out["recorder_over_loop"] = out["recorder_steps_per_s"] / out["loop_steps_per_s"]
    return out


def report(r: dict, a: argparse.Namespace, physics_hz: int, control_hz: int) -> None:
    print(f"batch: {r['envs']} environments ({', '.join(r['motions'])}), {a.threads} threads, {physics_hz} Hz physics, "
          f"{control_hz} Hz control, {r['tracker']}")
    print(f"backend: {r['backend']}, {r['bytes_per_env']:,} bytes per environment")
    print(f"raw {a.backend} (one call per attempt length, no Python between steps): "
          f"{r['raw_steps_per_s']:,.0f} physics steps/s")
    if "loop_steps_per_s" in r:
        print(f"{a.backend} + bare policy forward (one call and one forward per control step, running environments): "
              f"{r['loop_steps_per_s']:,.0f} physics steps/s")
    print(f"recorder ({a.tracker} tracker{', observation' if 'loop_steps_per_s' in r else ''}, termination, "
          f"bookkeeping): {r['recorder_steps_per_s']:,.0f} physics steps/s, {r['motion_seconds_per_s']:,.1f} "
          f"motion-seconds recorded per wall-second")
    print(f"ratio recorder/raw: {r['recorder_over_raw']:.2f} (load average {r['load_average'][0]:.1f})")
    if "recorder_over_loop" in r:
        print(f"ratio recorder/({a.backend} + policy): {r['recorder_over_loop']:.2f}")


def plot(results: list[dict], title: str, path: Path) -> None:
    """Physics steps/s against batch size, raw and recorder, on log axes."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    envs = [r["envs"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(envs, [r["raw_steps_per_s"] for r in results], "o-", label="raw simulator")
    if "loop_steps_per_s" in results[0]:
        ax.plot(envs, [r["loop_steps_per_s"] for r in results], "s-", label="simulator + bare policy")
    ax.plot(envs, [r["recorder_steps_per_s"] for r in results], "^-", label="recorder")
    ax.set(xscale="log", yscale="log", xlabel="environments in the batch", ylabel="physics steps / s", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--envs", default="48", help="environments (motions) in the batch; a comma list measures each")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="simulator threads (default: every core)")
    p.add_argument("--repeats", type=int, default=5, help="best of this many runs of each")
    p.add_argument("--tracker", choices=("pd", "parc"), default="pd",
                   help="pd: open loop; parc: a PARC-size policy with random weights")
    add_backend_arguments(p)
    p.add_argument("--motions", nargs="*", type=Path, default=[],
                   help="PARC motion files to cycle through (default: demo motions that pd tracks)")
    p.add_argument("--json", type=Path, help="write the figures and the machine here")
    p.add_argument("--plot", type=Path, help="plot physics steps/s against batch size here (needs matplotlib)")


def run(a: argparse.Namespace) -> None:
    character = Character.load()
    physics = RecordSettings().physics
    head = machine()
    tracker = _tracker(a.tracker, character, a.threads)
    results: list[dict] = []
    for envs in (int(x) for x in a.envs.split(",")):
        results.append(measure(envs, a, character, tracker))
        report(results[-1], a, physics.physics_hz, physics.control_hz)
        device = results[-1]["backend"].get("device", "cpu")  # the same for every batch size
        write_json(a.json, {**head, "device": device, "tracker": a.tracker, "backend": a.backend}, results)
    if a.plot:
        plot(results, f"{a.backend} on {device}, {a.tracker} tracker ({', '.join(results[0]['motions'])})", a.plot)
