"""PARC's three samples with tracker {kind: sampling} (defaults, or the keys of an optional JSON spec over
them), each recorded alone with later starts, the chosen attempt as selection chooses it under the
default gates, and its cost.

    python scripts/parc_samples_quality.py OUT.json ['{"search_passes": 1, "refine_passes": 1}']
"""
import json
import os
import sys
import time
from pathlib import Path
import numpy as np
from physrec import config
from physrec.formats.motion_file import read_motion_file
from physrec.motion.character import Character
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.stages.record import attempt_row
from physrec.stages.select import choose
from physrec.trackers.base import make_tracker
spec = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
cfg = config.validate({"iterations": [{"name": "i", "dataset": "x", "tracker": {"kind": "sampling", **spec}}]})
settings, sel = config.record_settings(cfg["record"]), cfg["selection"]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"  # ../shared beside the checkout
ch = Character.load()
rows = []
for name in ("TEASER_TERRAIN", "civilization", "sfu"):
    mf = read_motion_file(SAMPLES / f"{name}.pkl")
    t = time.process_time()
    rec = record_batch([BatchMotion(name, mf.motion, mf.terrain)], ch, make_tracker(cfg["iterations"][0]["tracker"], ch), settings)
    cpu = time.process_time() - t
    tries = [{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in attempt_row(i, name, a).items()} for i, a in enumerate(rec.attempts)]
    status, chosen, why = choose(tries, sel, settings.physics.control_hz)
    best = chosen or next((r for r in sorted(tries, key=lambda r: float(r["start_fraction"])) if r["success"] == "true"), None)
    row = {"motion": name, "length_s": round(mf.motion.duration, 3), "status": status, "reason": why,
           "start_fraction": best and float(best["start_fraction"]),
           "mean_body_pos_error_m": best and round(float(best["mean_body_pos_error"]), 4),
           "max_root_pos_error_m": best and round(float(best["max_root_pos_error"]), 4),
           "max_root_rot_error_deg": best and round(float(best["max_root_rot_error_deg"]), 1),
           "cpu_s": round(cpu, 1), "cpu_s_per_motion_s": round(cpu / mf.motion.duration, 1), "attempts": len(tries)}
    rows.append(row); print(json.dumps(row), flush=True)
json.dump({"machine": f"this project's 2-core VM, 1 thread; load average {os.getloadavg()[0]:.1f} at the end", "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/parc_samples_quality.py " + " ".join(repr(a) if " " in a else a for a in sys.argv[1:]),
           "spec": spec, "rows": rows},
          open(sys.argv[1], "w"), indent=1)
