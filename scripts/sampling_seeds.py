"""The sampling tracker on one motion over several seeds: one JSON line per run (mean body error,
max root and rotation errors, CPU-s per motion-second), and a plot of error against cost.

    python scripts/sampling_seeds.py run '{"_tag": "defaults"}' TEASER_TERRAIN:0 TEASER_TERRAIN:1 ... >> runs.jsonl
    python scripts/sampling_seeds.py plot runs.jsonl OUT.png OUT.json

Each motion (a PARC sample's stem, or a demo motion's name) is recorded alone by record_batch,
without later starts; the spec's keys (all but `_tag`) go over the sampling tracker's defaults.
"""
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"


def run(spec: dict, items: list[str]) -> None:
    from physrec.demo import demo_motions
    from physrec.formats.motion_file import read_motion_file
    from physrec.motion.character import Character
    from physrec.recording.batch import record_batch
    from physrec.recording.data import BatchMotion
    from physrec.recording.settings import RecordSettings
    from physrec.stages.record import kept_error_summary
    from physrec.trackers.sampling import SamplingPlanner, SamplingSettings
    ch, tag = Character.load(), spec.pop("_tag", "")
    for item in items:
        name, _, seed = item.partition(":")
        if (SHARED / f"{name}.pkl").exists():
            mf = read_motion_file(SHARED / f"{name}.pkl")
        else:
            mf = demo_motions()[name]
        t = time.process_time()
        rec = record_batch([BatchMotion(name, mf.motion, mf.terrain)], ch,
                           SamplingPlanner(SamplingSettings.from_spec(spec), ch), RecordSettings(start_fractions=()),
                           seed=int(seed or 0))
        cpu = time.process_time() - t
        (a,) = rec.attempts
        q = kept_error_summary(a.errors, a.kept_steps) if a.success else {}
        print(json.dumps({"tag": tag, "spec": spec, "motion": name, "seed": int(seed or 0), "ok": bool(a.success),
                          "body": q.get("mean_body_pos_error"), "root": q.get("max_root_pos_error"),
                          "rot_deg": q and math.degrees(q["max_root_rot_error"]),
                          "cpu_per_s": cpu / mf.motion.duration}), flush=True)


def plot(jsonl: str, png: str, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [json.loads(line) for line in open(jsonl) if line.startswith("{")]
    by = defaultdict(list)
    for r in runs:
        by[r["tag"]].append(r)
    points = []
    for tag, rs in by.items():
        body = np.array([r["body"] if r["ok"] else np.nan for r in rs], dtype=float)
        points.append({"tag": tag, "seeds": [r["seed"] for r in rs], "mean_body_pos_error_m": float(np.nanmean(body)),
                       "sd_m": float(np.nanstd(body)), "cpu_s_per_motion_s": float(np.mean([r["cpu_per_s"] for r in rs])),
                       "runs": rs})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in points:
        ax.errorbar(p["cpu_s_per_motion_s"], p["mean_body_pos_error_m"], yerr=p["sd_m"], fmt="o", capsize=3)
        ax.annotate(p["tag"], (p["cpu_s_per_motion_s"], p["mean_body_pos_error_m"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(0.1, ls="--", c="grey", lw=0.8)
    ax.axhline(0.06, ls=":", c="grey", lw=0.8)
    ax.set_xlabel("CPU-s per motion-second (one thread, shared 2-core VM)")
    ax.set_ylabel("mean body position error (m), mean ± sd over seeds")
    ax.set_title(f"sampling tracker on {runs[0]['motion']}: error against cost")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    json.dump({"machine": "the project's 2-core VM, shared with three other sessions (load 3-6)",
               "date": "2026-12-07", "points": points}, open(out, "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(json.loads(sys.argv[2]), sys.argv[3:])
    else:
        plot(*sys.argv[2:5])
