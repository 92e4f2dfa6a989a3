"""Issue 23's measurements (docs/benchmarks.md, "Segment recovery, issue 23"), one process:

`onsets`: every failed attempt of pd on the demo and PARC's three samples (record.recovery:
segments, so each failure's restarts fail too): where the termination fired, where the mean body
error and the root height error started their final rise, and the onset of stages/segments.py.

`compare`: the same motions recorded, selected and merged by the stages (as the workflow runs
them) once per recovery and tracker: source and kept seconds, segments, their gate errors and the
recording's CPU seconds.

    python scripts/segment_recovery.py onsets docs/bench/cpu-segment-onsets.json
    python scripts/segment_recovery.py compare docs/bench/cpu-segment-recovery.json [--sampling demo|all]
        [--recoveries parc,segments] [--trackers pd,sampling]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from physrec import config
from physrec.demo import write_demo
from physrec.formats.tables import read_tsv_records
from physrec.motion.character import Character
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.plan import build_reference
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.stages.index import index_dataset, read_indexed, read_manifest, write_manifest
from physrec.stages.merge import run_merge
from physrec.stages.record import run_record
from physrec.stages.segments import onset_frame
from physrec.stages.select import run_select
from physrec.trackers.pd import PDTracker

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"  # ../shared beside the checkout
PARC = ("TEASER_TERRAIN", "civilization", "sfu")
HEIGHT_DIVERGED_M = 0.03  # root height error at which the fall shows in the root's height


def dataset(root: Path, parc: bool = True, samples: Path = SAMPLES) -> Path:
    """The demo and (`parc`) PARC's samples in one dataset YAML."""
    write_demo(root / "demo")
    entries = yaml.safe_load((root / "demo" / "dataset.yaml").read_text())["motions"]
    entries = [{**e, "file": str(root / "demo" / e["file"])} for e in entries]
    if parc:
        entries += [{"file": str(samples / f"{n}.pkl"), "weight": 1.0} for n in PARC]
    path = root / "dataset.yaml"
    path.write_text(yaml.safe_dump({"motions": entries}))
    return path


def rise_start(values: np.ndarray) -> int:
    """The frame from which `values` (per frame, the terminated one last) only grow to the end
    within 2 mm: where the final rise starts."""
    k = len(values) - 1
    while k > 0 and values[k - 1] <= values[k] + 0.002:
        k -= 1
    return k


def onsets(out: Path, samples: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = index_dataset(dataset(Path(tmp), samples=samples))
        ch = Character.load()
        motions = []
        for r in manifest:
            mf = read_indexed(r["path"], r["sha256"], num_joints=ch.num_joints, num_bodies=ch.num_bodies)
            motions.append(BatchMotion(r["name"], mf.motion, mf.terrain))  # type: ignore[arg-type]
        cfg = config.validate({"iterations": [{"name": "i", "dataset": "x"}], "record": {"recovery": "segments"}})
        settings = config.record_settings(cfg["record"])
        rec = record_batch(motions, ch, PDTracker(), settings)
    ref = build_reference(ch, motions)
    hz = settings.physics.control_hz
    rows = []
    for a in rec.attempts:
        if not a.terminated:
            continue
        pose = ref.pose(np.full(len(a.ref_time), a.motion), a.ref_time)
        dz = np.abs(ch.qpos_to_pose(a.qpos)[0][:, 2] - pose.root_pos[:, 2])
        body = np.concatenate([[0.0], a.errors[:, 3]])  # per frame, frame 0 the reset
        onset = onset_frame(a.errors, a.steps)
        height = int(np.flatnonzero(dz[:-1] <= HEIGHT_DIVERGED_M)[-1]) if (dz[:-1] <= HEIGHT_DIVERGED_M).any() else 0
        rows.append({"motion": motions[a.motion].name, "start_s": round(a.start_time, 3),
                     "termination_s": round(a.end_time, 3), "reason": a.fail_reason,
                     "body_rise_s": round(a.start_time + rise_start(body) / hz, 3),
                     "height_diverged_s": round(a.start_time + height / hz, 3),
                     "onset_s": round(a.start_time + onset / hz, 3),
                     "body_error_at_onset_m": round(float(body[onset]), 3),
                     "onset_to_termination_s": round((a.steps - onset) / hz, 3)})
        print(json.dumps(rows[-1]), flush=True)
    before = [r["onset_s"] - r["height_diverged_s"] for r in rows]
    write(out, {"failures": len(rows),
                "onset_to_termination_s": {"min": min(r["onset_to_termination_s"] for r in rows),
                                           "median": float(np.median([r["onset_to_termination_s"] for r in rows])),
                                           "max": max(r["onset_to_termination_s"] for r in rows)},
                "height_diverged_before_onset": sum(b > 1e-9 for b in before),
                "most_height_diverged_before_onset_s": round(max(before), 3), "rows": rows})


def compare(out: Path, sampling: str, samples: Path, recoveries: list[str], trackers: list[str]) -> None:
    runs = [("pd", recovery, True) for recovery in recoveries if "pd" in trackers]
    if sampling != "none" and "sampling" in trackers:
        runs += [("sampling", recovery, sampling == "all") for recovery in recoveries]
    rows = []
    for tracker, recovery, parc in runs:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            cfg = config.validate({"iterations": [{"name": "i", "dataset": "x", "tracker": {"kind": tracker}}],
                                   "record": {"recovery": recovery}})
            manifest = index_dataset(dataset(root, parc, samples))
            bad = [f"{r['name']}: {r['error']}" for r in manifest if not r["valid"]]
            if bad:
                raise SystemExit(f"invalid motions: {'; '.join(bad)}")
            write_manifest(root / "manifest.tsv", manifest)
            write_plan(root / "plan.tsv", make_plan(read_manifest(root / "manifest.tsv"), 10 ** 6))
            batch = batch_ids(root / "plan.tsv")[0]
            cpu = time.process_time()
            recording = run_record(root / "plan.tsv", batch, cfg["record"], cfg["iterations"][0]["tracker"],
                                   {"name": "mujoco"}, "builtin:humanoid", 0, 1, root / "record", ["bench"],
                                   progress=lambda s: None)
            cpu = time.process_time() - cpu
            run_select(root / "record", cfg["selection"], root / "select")
            run_merge("i", root / "manifest.tsv", root / "plan.tsv", [root / "select"], [root / "record"], None,
                      1.0, root / "merge", progress=lambda s: None)
            kept = read_tsv_records(root / "merge" / "manifest.tsv")
            for name in dict.fromkeys(r["name"] for r in kept):
                pieces = [r for r in kept if r["name"] == name]
                got = [r for r in pieces if r["recorded_duration"]]
                sel = [r for r in read_tsv_records(root / "select" / "selected.tsv") if r["motion"] == name]
                rows.append({
                    "tracker": tracker, "recovery": recovery, "motion": name,
                    "source_s": round(float(pieces[0]["source_duration"]), 3),
                    "kept_s": round(sum(float(r["recorded_duration"]) for r in got), 3),
                    "pieces": [[float(r["start_time"]), float(r["end_time"])] for r in got],
                    "status": pieces[0]["status"], "reason": pieces[0]["fail_reason"],
                    "weight": round(sum(float(r["weight"]) for r in got), 4),
                    "mean_body_pos_error_m": [round(float(r["mean_body_pos_error"]), 4) for r in sel if r["recorded_file"]],
                    "max_root_pos_error_m": [round(float(r["max_root_pos_error"]), 4) for r in sel if r["recorded_file"]],
                    "max_root_rot_error_deg": [round(float(r["max_root_rot_error_deg"]), 1)
                                               for r in sel if r["recorded_file"]],
                    "attempts": int(pieces[0]["attempts"] or 0)})
                print(json.dumps(rows[-1]), flush=True)
            summary = {"tracker": tracker, "recovery": recovery, "cpu_s": round(cpu, 2),
                       "physics_steps": recording.sim_steps}
            rows.append(summary)
            print(json.dumps(summary), flush=True)
    write(out, {"rows": rows})


def cpu_name() -> str:
    """The processor's model name (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def write(out: Path, body: dict) -> None:
    out.write_text(json.dumps({"machine": f"{cpu_name()} ({os.cpu_count()} CPUs), 1 thread",
                               "date": time.strftime("%Y-%m-%d"), **body}, indent=1) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["onsets", "compare"])
    p.add_argument("out", type=Path)
    p.add_argument("--sampling", choices=["none", "demo", "all"], default="none",
                   help="also tracker sampling, on the demo or on the demo and PARC's samples (slow)")
    p.add_argument("--samples", type=Path, default=SAMPLES, help="the folder of PARC's sample files")
    p.add_argument("--recoveries", default="parc,segments", help="which record.recovery modes (comma-separated)")
    p.add_argument("--trackers", default="pd,sampling", help="which trackers (comma-separated)")
    a = p.parse_args()
    if a.what == "onsets":
        onsets(a.out, a.samples)
    else:
        compare(a.out, a.sampling, a.samples, a.recoveries.split(","), a.trackers.split(","))
