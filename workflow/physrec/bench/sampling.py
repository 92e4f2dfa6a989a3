"""`physrec bench sampling`: the sampling tracker's cost and quality.

Each motion is recorded alone by physrec.recording.batch.record_batch with the sampling
tracker at its defaults, so its compute is its own: success, tracking errors, the part recorded,
physics steps, CPU seconds per motion-second (one thread by default: "per core-second")
and wall seconds. In the same run the raw simulator steps the search's batch shape (one
world per sample, window + look-ahead control steps from the motion's start, one call) to
give the search's physics rate as a ratio of raw: what the search's bookkeeping costs.

Motions: `--motions` (PARC files such as TEASER_TERRAIN, civilization), only those; without
it, the demo's three that `pd` fails (climb_step, ramp_descent_then_stand, glide_up_step).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from physrec.bench import add_backend_arguments, backend_spec, machine, write_json
from physrec.demo import demo_motions
from physrec.formats.motion_file import read_motion_file
from physrec.motion.character import Character
from physrec.motion.reference import reference_state
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.plan import batch_boxes, build_reference
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BackendSpec, make_backend
from physrec.stages.gates import kept_error_summary
from physrec.trackers.sampling import SamplingPlanner, SamplingSettings

DEMO_FAILING = ("climb_step", "ramp_descent_then_stand", "glide_up_step")


def load_motions(files: list[Path]) -> list[BatchMotion]:
    """The given motion files in their order, or without any, the demo's motions that pd fails."""
    if not files:
        demo = demo_motions()
        return [BatchMotion(n, demo[n].motion, demo[n].terrain) for n in DEMO_FAILING]
    out = []
    for p in files:
        mf = read_motion_file(p)
        out.append(BatchMotion(p.stem, mf.motion, mf.terrain))  # type: ignore[arg-type]
    return out


def raw_rate(motion: BatchMotion, character: Character, planner: SamplingPlanner, settings: RecordSettings,
             spec: BackendSpec, repeats: int) -> float:
    """Physics steps/s of one search call's shape on the bare backend: `samples` worlds on the
    motion's terrain from its start state, window + look-ahead control steps, nominal targets."""
    s = planner.settings
    n = int(s.samples) if s.samples != "auto" else 512
    boxes = batch_boxes([motion], settings.terrain_margin)
    sim = make_backend(spec, character, settings.physics, n, boxes.shape[1])
    sim.set_terrain(np.arange(n), np.broadcast_to(boxes[0], (n,) + boxes.shape[1:]))
    ref = build_reference(character, [motion])
    H = s.window_steps + s.lookahead_steps
    qpos, qvel = (np.repeat(x, n, axis=0) for x in reference_state(ref, np.zeros(1, dtype=np.int64), np.zeros(1)))
    times = np.arange(1, H + 1) / settings.physics.control_hz
    targets = character.joint_rot_to_dof(ref.pose(np.zeros(H, dtype=np.int64), times).joint_rot)
    targets = np.broadcast_to(targets, (n, H, character.num_dof)).copy()
    best = float("inf")
    env = np.arange(n)
    for _ in range(repeats):
        sim.reset(env, qpos, qvel)
        start = time.perf_counter()
        sim.step(env, targets)
        best = min(best, time.perf_counter() - start)
    sim.close()
    return n * H * settings.physics.substeps / best


def measure(motion: BatchMotion, character: Character, spec_dict: dict, settings: RecordSettings,
            backend: BackendSpec, repeats: int, say) -> dict[str, Any]:
    planner = SamplingPlanner(SamplingSettings.from_spec(spec_dict), character)
    raw = raw_rate(motion, character, planner, settings, backend, repeats)
    wall, cpu = time.perf_counter(), time.process_time()
    rec = record_batch([motion], character, planner, settings, backend, say, motion.name)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    length = float(motion.motion.duration)
    best = max(rec.attempts, key=lambda a: (a.success, -a.start_time, a.end_time - a.start_time))
    recorded = best.end_time - best.start_time if best.success else 0.0
    searched = [a for a in rec.attempts if a.search and a.search.get("method") == "search"]
    steps = sum(a.search["physics_steps"] for a in searched)  # type: ignore[index]
    return {
        "motion": motion.name, "length_s": round(length, 3), "success": best.success,
        "start_time": round(best.start_time, 3), "end_time": round(best.end_time, 3),
        "recorded_s": round(recorded, 3), "method": (best.search or {}).get("method"),
        "attempts": len(rec.attempts), "restarts": sum(a.search["restarts"] for a in searched),  # type: ignore[index]
        "search_physics_steps": steps, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
        "cpu_s_per_motion_s": round(cpu / length, 2),
        "motion_s_per_cpu_s": round(recorded / cpu, 4) if cpu > 0 else None,
        "search_steps_per_s": steps / wall if wall > 0 else 0.0, "raw_steps_per_s": raw,
        "search_over_raw": (steps / wall) / raw if wall > 0 else 0.0,
        **({"quality": {k: round(v, 4) for k, v in kept_error_summary(best.errors, best.kept_steps).items()}}
           if best.success else {}),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--motions", nargs="*", type=Path, default=[],
                   help="PARC motion files, recorded in this order and only these (default: the demo's three "
                        "motions that pd fails)")
    p.add_argument("--samples", help="samples per window, a comma list measures each (default: the tracker's, "
                   "512; auto: from the GPU's memory)")
    p.add_argument("--later-starts", action="store_true", help="also try PARC's later start times")
    p.add_argument("--threads", type=int, default=1, help="simulator threads (default 1, so that CPU seconds are "
                   "core-seconds)")
    p.add_argument("--repeats", type=int, default=5, help="the raw simulator's rate: best of this many runs")
    add_backend_arguments(p)
    p.add_argument("--verbose", action="store_true", help="print the recorder's progress")
    p.add_argument("--json", type=Path, help="write the figures and the machine here")


def run(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every motion at every sample count of `--samples` (a comma list; default the tracker's);
    the figures are written after each."""
    character = Character.load()
    backend = backend_spec(a)
    head = {**machine(), "threads": a.threads, "backend": a.backend, "device": backend.device, "tracker": "sampling"}
    counts = [c if c == "auto" else int(c) for c in (a.samples or "").split(",") if c] or [None]
    settings = RecordSettings() if a.later_starts else RecordSettings(start_fractions=())
    results = []
    for m in load_motions(a.motions):
        for count in counts:
            spec = {} if count is None else {"samples": count}
            r = measure(m, character, spec, settings, backend, a.repeats, print if a.verbose else lambda s: None)
            r["samples"] = count or "default"
            results.append(r)
            where = f"{r['start_time']:.2f}-{r['end_time']:.2f} s" if r["success"] else "not recorded"
            q = r.get("quality")
            errors = (f"body {q['mean_body_pos_error']:.3f} m, root {q['max_root_pos_error']:.2f} m "
                      f"{np.degrees(q['max_root_rot_error']):3.0f} deg" if q else "-")
            print(f"{r['motion']:<24} {r['length_s']:5.2f} s  samples {r['samples']:<7} "
                  f"{'ok  ' if r['success'] else 'FAIL'} {where:<16} {errors:<34} by {r['method'] or '-':<6} "
                  f"restarts {r['restarts']}  {r['cpu_s']:7.1f} CPU-s ({r['cpu_s_per_motion_s']:.1f} per motion-s), "
                  f"{r['wall_s']:.1f} s wall  search {r['search_steps_per_s']:,.0f} physics steps/s = "
                  f"{r['search_over_raw']:.2f} x raw ({r['raw_steps_per_s']:,.0f})", flush=True)
            write_json(a.json, head, results)
    return results
