"""A learned tracker alone and with `rescue` (the search's defaults), the rescue's nominal targets
the policy's recorded ones (`nominal: recorded`) or the policy on the search's states (`nominal:
policy`), side by side in one run: the degraded exported policy of tests/test_rescue.py (the `pd`
targets plus a hip bias) on the demo's motions and PARC's samples, and PARC's checkpoint
(../shared/parc_samples/oracle/model_seed1.pt) on PARC's samples. Each motion recorded alone from
its start only (no later starts: what the rescue itself keeps), the attempt judged as selection
judges it under the default gates; kept seconds against source seconds, errors, CPU seconds (of
them, the policy's evaluations inside the search). The jobs run on `--workers` processes of one
thread each, longest first.

    python scripts/rescue_quality.py OUT.json [--workers 2]
"""
import argparse
import json
import multiprocessing
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
from physrec.recording import planned_pass  # noqa: E402
from physrec.recording.batch import record_batch  # noqa: E402
from physrec.recording.data import BatchMotion  # noqa: E402
from physrec.stages.record import attempt_row  # noqa: E402
from physrec.stages.select import choose  # noqa: E402
from physrec.trackers.base import make_tracker  # noqa: E402
from physrec.trackers.policy import limit_torch_threads  # noqa: E402

PARC_SAMPLES = ("TEASER_TERRAIN", "civilization", "sfu")
CHECKPOINT = SHARED / "oracle" / "model_seed1.pt"
VARIANTS = {"policy": {}, "rescue, nominal recorded": {"rescue": {"nominal": "recorded"}},
            "rescue, nominal policy": {"rescue": {"nominal": "policy"}}}
CFG = config.validate({"iterations": [{"name": "i", "dataset": "x"}], "record": {"start_fractions": []}})
_motions: dict[str, BatchMotion] = {}
_policy_cpu = [0.0]  # CPU seconds of the policy's evaluations on the search's states, this job


def _motion(name: str) -> BatchMotion:
    if not _motions:
        _motions.update({n: BatchMotion(n, m.motion, m.terrain) for n, m in demo_motions().items()})
        for n in PARC_SAMPLES:
            mf = read_motion_file(SHARED / f"{n}.pkl")
            _motions[n] = BatchMotion(n, mf.motion, mf.terrain)
    return _motions[name]


def _timed_policy_on_states(*args, _inner=planned_pass.policy_on_states):
    act = _inner(*args)

    def timed(*a):
        t = time.process_time()
        out = act(*a)
        _policy_cpu[0] += time.process_time() - t
        return out
    return timed


def run(job: tuple[str, dict, str, str]) -> dict:
    tracker_name, spec, variant, name = job
    limit_torch_threads(1)
    planned_pass.policy_on_states = _timed_policy_on_states
    ch = Character.load()
    m = _motion(name)
    settings, sel = config.record_settings(CFG["record"]), CFG["selection"]
    tracker = make_tracker(config.tracker_spec({**spec, **VARIANTS[variant]}), ch)
    _policy_cpu[0] = 0.0
    t = time.process_time()
    rec = record_batch([m], ch, tracker, settings)
    cpu = time.process_time() - t
    tries = [{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in attempt_row(i, m.name, a).items()}
             for i, a in enumerate(rec.attempts)]
    status, chosen, why = choose(tries, sel, settings.physics.control_hz)
    searched = [a.search for a in rec.attempts if a.search and a.search.get("method") == "search"]
    a = rec.attempts[0]
    return {"tracker": tracker_name, "variant": variant, "motion": m.name, "source_s": round(m.motion.duration, 3),
            "status": status, "reason": why,
            "kept_s": round(float(chosen["end_time"]) - float(chosen["start_time"]), 3) if chosen else 0.0,
            "tracked_to_s": round(a.end_time, 3), "fail_reason": a.fail_reason,
            "mean_body_pos_error_m": chosen and round(float(chosen["mean_body_pos_error"]), 4),
            "max_root_pos_error_m": chosen and round(float(chosen["max_root_pos_error"]), 3),
            "max_root_rot_error_deg": chosen and round(float(chosen["max_root_rot_error_deg"]), 1),
            "searched": bool(searched), "search": searched[0] if searched else None,
            "cpu_s": round(cpu, 1), "cpu_s_per_motion_s": round(cpu / m.motion.duration, 1),
            "policy_on_states_cpu_s": round(_policy_cpu[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    degraded = {"kind": "exported", "model": str(_export(Character.load(), Path(tempfile.mkdtemp()) / "degraded.pt2")),
                "observation": "parc"}
    trackers = {"degraded exported policy": (degraded, list(demo_motions()) + list(PARC_SAMPLES)),
                "PARC checkpoint (oracle/model_seed1.pt)": ({"kind": "parc", "model": str(CHECKPOINT)},
                                                            list(PARC_SAMPLES))}
    jobs = [(t, spec, v, n) for t, (spec, names) in trackers.items() for v in VARIANTS for n in names]
    source = {n: _motion(n).motion.duration for _, _, _, n in jobs}
    order = sorted(range(len(jobs)), key=lambda i: (-source[jobs[i][3]] * (jobs[i][2] != "policy"), i))
    started = time.time()
    rows: list[dict | None] = [None] * len(jobs)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for i, row in zip(order, pool.imap(run, [jobs[i] for i in order])):
            rows[i] = row
            print(json.dumps(row), flush=True)
    json.dump({"machine": "the project's 2-core VM, shared with other sessions' jobs",
               "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
               "command": "python scripts/rescue_quality.py " + " ".join(sys.argv[1:]),
               "workers": args.workers, "wall_s": round(time.time() - started), "rows": rows},
              open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
