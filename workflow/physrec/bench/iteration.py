"""`physrec bench iteration`: a synthetic PARC iteration's record job, end to end, and what a
full iteration would take on this machine.

N copies of PARC motion files (distinct names, each copy raised 0.1 mm so that the files
differ) are indexed and planned as one batch and recorded by the record job's own code
(stages.record.run_record: PARC's later starts, observations saved in rollouts.h5, every
output written) with a PARC-size policy: PARC's checkpoint (`--model`), or PARC's layout with random weights
(`--model random`, the default: the same cost per step, but its attempts fall within about a
second, so the job is mostly later starts; a trained checkpoint tracks for longer).
With `--whole-motions` no termination fires, so every attempt simulates its whole motion (as
with a tracker that tracks all of them) and there are no later starts: the root position limit
is raised to the files' largest root path extent (3-D diagonal of its bounding box) plus 2 m,
the terrain margin to that plus the character's reach (as the config requires, so terrains
far from a path are simulated too), the rotation limit to 180 degrees and the body offset
limits to 1000 m. The policy is still computed in full at every control step; its actions
(random weights or PARC's checkpoint) do not track PARC's terrains, so the character falls
and lies or flails where it fell while its reference moves on: the physics of a fallen
character, not of one that tracks.
Each thread count of `--threads` records the same batch; printed: motion-seconds recorded per
wall-second, the share of the job's time in physics, policy, observation, termination and
writing, and the projected time of an iteration of 2000 motions of 10 s (PARC's size) in jobs
of this batch's motion-seconds, one after another, each also paying a new process's start-up
(importing torch and physrec, measured once in a subprocess).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from physrec import config
from physrec.bench import load_average, machine, write_json
from physrec.bench.batch import copies, random_checkpoint
from physrec.formats.dataset_yaml import write_dataset
from physrec.formats.motion_file import write_motion_file
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.stages.index import index_dataset, read_manifest, write_manifest
from physrec.stages.record import run_record

ITERATION_MOTION_S = 2000 * 10.0  # PARC's iteration: about 2000 generated motions of up to 10 s
SHARES = (("physics", ("physics",)), ("policy", ("tracker",)), ("observation", ("observation",)),
          ("termination", ("termination", "reference")), ("bookkeeping", ("bookkeeping",)),
          ("writing rollouts.h5", ("writing",)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=Path, nargs="+", required=True, help="PARC motion files to cycle through")
    p.add_argument("--copies", type=int, default=64, help="motions in the batch, the files cycled (default: the "
                   "CPU's batch_size, 64)")
    p.add_argument("--model", default="random", help="PARC's checkpoint (model_*.pt), or 'random' (default): "
                   "PARC's layout with random weights, whose attempts fall early")
    p.add_argument("--whole-motions", action="store_true",
                   help="terminations that cannot fire on these files: every attempt simulates its whole motion, "
                        "no later starts (the physics of a fallen character; see the module's docstring)")
    p.add_argument("--threads", default="1,2", help="record job threads, a comma list measures each")
    p.add_argument("--dir", type=Path, default=Path("/tmp/physrec-bench-iteration"))
    p.add_argument("--json", type=Path, help="write the figures and the machine here")
    p.add_argument("--verbose", action="store_true", help="print the record job's log")


def prepare(root: Path, files: list[Path], n: int) -> tuple[Path, str, float]:
    """The motions written, indexed and planned as one batch: (plan, batch, motion-seconds)."""
    data = root / "data"
    entries = []
    for rel, mf in copies(files, n, None):
        write_motion_file(data / rel, mf)
        entries.append((rel, 1.0))
    write_dataset(data / "dataset.yaml", entries)
    rows = index_dataset(data / "dataset.yaml")
    write_manifest(root / "manifest.tsv", rows)
    write_plan(root / "plan.tsv", make_plan(read_manifest(root / "manifest.tsv"), 10 * n))
    (batch,) = batch_ids(root / "plan.tsv")
    return root / "plan.tsv", batch, sum(float(r["duration"]) for r in rows)


def never_terminating(files: list[Path]) -> dict:
    """`record` keys under which no termination fires on these files (--whole-motions)."""
    from physrec.formats.motion_file import read_motion_file
    from physrec.motion.character import Character
    extent = 0.0
    for f in files:
        path = read_motion_file(f).motion.root_pos
        extent = max(extent, float(np.linalg.norm(path.max(axis=0) - path.min(axis=0))))
    root = math.ceil(extent + 2.0)
    character = Character.load()
    return {"terrain_margin_m": math.ceil(root + character.reach),
            "termination": {"root_pos_error_m": root, "root_rot_error_deg": 180.0,
                            "body_offset_limits_m": [1000.0] * character.num_joints}}


def startup_seconds() -> float:
    """A record job's imports in a new process (torch and physrec's recorder)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, physrec.stages.record, physrec.trackers.parc_policy"],
                   check=True)
    return time.perf_counter() - start


def measure(a: argparse.Namespace, plan: Path, batch: str, motion_s: float, threads: int, startup: float) -> dict:
    model = random_checkpoint(a.dir / "random-parc.pt") if a.model == "random" else Path(a.model).resolve()
    rec = config.validate({"iterations": [{"name": "i", "dataset": "d"}],
                           "record": never_terminating(a.files) if a.whole_motions else {}})["record"]
    start = time.perf_counter()
    recording = run_record(plan, batch, rec, {"kind": "parc", "model": str(model)}, {"name": "mujoco"},
                           "builtin:humanoid", 0, threads, a.dir / f"record-{threads}", ["physrec", "bench"],
                           progress=print if a.verbose else lambda line: None)
    wall = time.perf_counter() - start
    shares = {name: sum(recording.seconds.get(k, 0.0) for k in keys) / wall for name, keys in SHARES}
    shares["rest of the job (loading the policy, reading, other outputs)"] = 1.0 - sum(shares.values())
    attempted = sum(x.end_time - x.start_time for x in recording.attempts)
    return {"threads": threads, "wall_s": wall, "startup_s": startup, "motion_s": motion_s,
            "simulated_motion_s": attempted, "attempts": len(recording.attempts),
            "succeeded": len({x.motion for x in recording.attempts if x.success}), "motions": len(recording.motions),
            "motion_s_per_wall_s": motion_s / wall, "shares": shares,
            "iteration_projection_s": ITERATION_MOTION_S / motion_s * (wall + startup), "load_average": load_average()}


def run(a: argparse.Namespace) -> None:
    head = {**machine(), "model": a.model, "files": [f.name for f in a.files], "copies": a.copies,
            "whole_motions": a.whole_motions}
    if a.whole_motions:
        head["record"] = never_terminating(a.files)
        print(f"whole motions: record keys {head['record']}")
    a.dir.mkdir(parents=True, exist_ok=True)
    plan, batch, motion_s = prepare(a.dir, a.files, a.copies)
    startup = startup_seconds()
    import torch  # noqa: F401 - imported before the timed jobs, whose start-up is `startup`
    print(f"{a.copies} motions, {motion_s:.1f} motion-seconds, one batch; policy: "
          f"{'PARC layout, random weights' if a.model == 'random' else a.model}", flush=True)
    results: list[dict] = []
    for threads in (int(t) for t in a.threads.split(",")):
        r = measure(a, plan, batch, motion_s, threads, startup)
        results.append(r)
        print(f"{threads} thread(s): {r['wall_s']:.1f} s wall, {r['motion_s_per_wall_s']:.1f} motion-s per wall-s "
              f"({r['attempts']} attempts, {r['simulated_motion_s']:.1f} motion-s simulated, {r['succeeded']}/"
              f"{r['motions']} motions succeeded, load average {r['load_average'][0]:.1f}); a 2000 x 10 s "
              f"iteration in such jobs, each with a {startup:.1f}-s start-up: {r['iteration_projection_s'] / 60:.1f} min",
              flush=True)
        print("  share of the job: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["shares"].items()), flush=True)
        write_json(a.json, head, results)
    if len(results) > 1 and results[0]["threads"] == 1:
        gain = results[-1]["motion_s_per_wall_s"] / results[0]["motion_s_per_wall_s"]
        per_doubling = gain ** (1 / math.log2(results[-1]["threads"]))
        cores = 16
        projected = results[0]["iteration_projection_s"] / per_doubling ** math.log2(cores)
        print(f"threads 1 -> {results[-1]['threads']}: {gain:.2f}x; if every doubling of threads gained as much, "
              f"{cores} threads would take {projected / 60:.1f} min for the iteration", flush=True)
        write_json(a.json, {**head, "speedup": gain, "projection_16_threads_s": projected}, results)
