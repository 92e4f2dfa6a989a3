"""The degraded exported policy of tests/test_rescue.py (the `pd` targets plus a hip bias), with and
without `rescue: {}` (the search's defaults), on the demo's motions and PARC's samples: each motion
recorded alone with PARC's later starts, the attempt chosen as selection chooses it under the
default gates; kept seconds against source seconds, errors and CPU seconds.

    python scripts/rescue_quality.py OUT.json
"""
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_rescue import SHARED, _export  # noqa: E402  (the test's degraded policy)

from physrec import config  # noqa: E402
from physrec.demo import demo_motions  # noqa: E402
from physrec.formats.motion_file import read_motion_file  # noqa: E402
from physrec.motion.character import Character  # noqa: E402
from physrec.recording.batch import record_batch  # noqa: E402
from physrec.recording.data import BatchMotion  # noqa: E402
from physrec.stages.record import attempt_row  # noqa: E402
from physrec.stages.select import choose  # noqa: E402
from physrec.trackers.base import make_tracker  # noqa: E402

ch = Character.load()
cfg = config.validate({"iterations": [{"name": "i", "dataset": "x"}]})
settings, sel = config.record_settings(cfg["record"]), cfg["selection"]
demo = demo_motions()
motions = [BatchMotion(n, m.motion, m.terrain) for n, m in demo.items()]
for n in ("TEASER_TERRAIN", "civilization", "sfu"):
    mf = read_motion_file(SHARED / f"{n}.pkl")
    motions.append(BatchMotion(n, mf.motion, mf.terrain))
policy = _export(ch, Path(tempfile.mkdtemp()) / "degraded.pt2")
rows = []
for variant, extra in (("policy", {}), ("policy + rescue", {"rescue": {}})):
    spec = config.tracker_spec({"kind": "exported", "model": str(policy), "observation": "parc", **extra})
    tracker = make_tracker(spec, ch)
    for m in motions:
        t = time.process_time()
        rec = record_batch([m], ch, tracker, settings)
        cpu = time.process_time() - t
        tries = [{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in attempt_row(i, m.name, a).items()}
                 for i, a in enumerate(rec.attempts)]
        status, chosen, why = choose(tries, sel, settings.physics.control_hz)
        searched = [a.search for a in rec.attempts if a.search and a.search.get("method") == "search"]
        row = {"variant": variant, "motion": m.name, "source_s": round(m.motion.duration, 3), "status": status,
               "reason": why, "kept_s": round(float(chosen["end_time"]) - float(chosen["start_time"]), 3) if chosen else 0.0,
               "start_time": chosen and float(chosen["start_time"]),
               "mean_body_pos_error_m": chosen and round(float(chosen["mean_body_pos_error"]), 4),
               "max_root_pos_error_m": chosen and round(float(chosen["max_root_pos_error"]), 3),
               "max_root_rot_error_deg": chosen and round(float(chosen["max_root_rot_error_deg"]), 1),
               "attempts": len(tries), "searched_attempts": len(searched),
               "policy_steps": [s.get("policy_steps") for s in searched],
               "cpu_s": round(cpu, 1), "cpu_s_per_motion_s": round(cpu / m.motion.duration, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
json.dump({"machine": "the project's 2-core VM, shared with other sessions' jobs", "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/rescue_quality.py " + sys.argv[1], "rows": rows}, open(sys.argv[1], "w"), indent=1)
