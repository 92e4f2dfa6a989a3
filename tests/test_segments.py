"""record.recovery: segments (issue 23): failed attempts restarted where they ended, every clean
segment kept as its own PARC motion file with its source span, the next dataset's weights split by
duration; PARC's recovery unchanged. Real MuJoCo on the demo under pd."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from physrec import config
from physrec.demo import write_demo
from physrec.formats.motion_file import read_motion_file
from physrec.formats.rollouts import open_rollouts, read_errors
from physrec.formats.tables import read_tsv_records
from physrec.formats.text import NAME_MAX
from physrec.recording.batch import record_batch
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BackendSpec
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.stages.gates import kept_error_summary
from physrec.stages.index import index_dataset, read_manifest, write_manifest
from physrec.stages.merge import run_merge
from physrec.stages.record import run_record
from physrec.stages.segments import ONSET_BODY_ERROR_M, choose_segments, onset_frame, segment_of
from physrec.stages.select import recorded_file_name, run_select
from physrec.trackers.pd import PDTracker

SEGMENTS = RecordSettings(recovery="segments")
HZ = 30


def _errors(body: list[float], root: float = 0.02, rot: float = 0.05) -> np.ndarray:
    """Per-step tracking errors [T, 4] with these mean body errors, a constant root error and root
    rotation error (radians)."""
    e = np.zeros((len(body), 4), dtype=np.float32)
    e[:, 0], e[:, 1], e[:, 3] = root, rot, body
    return e


def _attempt(steps: int, success: bool, start: float = 0.0, fraction: float = 0.0) -> dict[str, str]:
    kept = steps if success else steps - 1
    return {"attempt": "traj_0", "motion": "m", "start_fraction": str(fraction), "start_time": str(start),
            "end_time": str(start + steps / HZ), "steps": str(steps), "success": "true" if success else "false",
            "fail_reason": "" if success else "root_position", "kept_steps": str(kept),
            "kept_end_time": str(round(start + kept / HZ, 9)), "max_root_pos_error": "0.02",
            "max_root_rot_error": "0.05", "mean_body_pos_error": "0.03"}


# -- where a failure starts and what is kept before it ------------------------------------------


def test_the_onset_is_the_last_healthy_frame_before_the_termination():
    # frames 1..40 track (0.03 m), a bump over the threshold at 20-22, then the fall from frame 41
    body = [0.03] * 40 + [0.12, 0.2, 0.3, 0.5]
    body[19:22] = [0.15, 0.15, 0.15]
    assert onset_frame(_errors(body), len(body)) == 40
    assert onset_frame(_errors([0.2] * 10), 10) == 0  # never healthy: the reset frame
    # the root error counts too: a root 0.2 m off is no longer healthy
    assert onset_frame(_errors([0.03] * 10, root=0.2), 10) == 0
    assert onset_frame(_errors([ONSET_BODY_ERROR_M] * 5 + [0.5]), 6) == 5  # at the threshold: healthy


def test_a_failed_attempt_keeps_its_prefix_up_to_the_margin_with_its_own_errors():
    body = [0.03] * 40 + [0.09, 0.12, 0.2, 0.3, 0.5]  # onset frame 41, termination at step 45
    a = _attempt(len(body), success=False)
    s = segment_of(a, _errors(body), HZ, margin_s=0.1)
    assert s.steps == 41 - 3 and s.status == "recorded_segment"
    assert float(s.row["mean_body_pos_error"]) == pytest.approx(0.03)  # over the segment, not the attempt
    assert float(s.row["kept_end_time"]) == pytest.approx(38 / HZ)
    assert segment_of(a, _errors(body), HZ, margin_s=0.0).steps == 41
    # a success is kept whole, from its attempts.tsv row as PARC's selection reads it
    ok = _attempt(60, success=True)
    assert segment_of(ok, _errors([0.03] * 60), HZ, 0.1).steps == 60
    assert segment_of(ok, _errors([0.03] * 60), HZ, 0.1).status == "recorded"


def test_segments_pass_the_gates_over_their_frames_and_the_shortest_are_dropped():
    sel = {**config.validate({"iterations": [{"name": "i", "dataset": "x"}]})["selection"]}
    clean = [0.03] * 40 + [0.2, 0.4, 0.6]  # a 1.2 s segment
    sloppy = [0.03] * 38 + [0.3, 0.5]  # tracks by the onset rule, its root turned 57 degrees away
    short = [0.03] * 10 + [0.3, 0.6]  # 0.23 s
    attempts = [_attempt(len(clean), False, 0.0), _attempt(len(sloppy), False, 2.0, 0.3),
                _attempt(len(short), False, 4.0, 0.6)]
    for i, a in enumerate(attempts):
        a["attempt"] = f"traj_{i}"
    errors = {"traj_0": _errors(clean), "traj_1": _errors(sloppy, rot=1.0), "traj_2": _errors(short)}
    status, kept, why = choose_segments(attempts, lambda a: errors[a["attempt"]], sel, 1.0, HZ)
    assert status == "recorded_segment" and why == "" and [s.attempt["attempt"] for s in kept] == ["traj_0"]
    loose = {**sel, "max_root_rot_error_deg": 60.0}
    _, kept, _ = choose_segments(attempts, lambda a: errors[a["attempt"]], loose, 1.0, HZ)
    assert [s.attempt["attempt"] for s in kept] == ["traj_0", "traj_1"]
    assert [s.attempt["attempt"] for s in choose_segments(attempts, lambda a: errors[a["attempt"]], sel, 0.2,
                                                          HZ)[1]] == ["traj_0", "traj_2"]
    strict = {**sel, "max_mean_body_pos_error_m": 0.02}
    status, kept, why = choose_segments(attempts, lambda a: errors[a["attempt"]], strict, 1.0, HZ)
    assert (status, kept) == ("rejected", []) and why == "mean_body_pos_error 0.030 m > 0.02 m"


def test_segment_names_are_unique_and_fit_in_a_file_name():
    long = "m" * 250
    names = {recorded_file_name(long, t / HZ) for t in range(0, 30000, 7)}
    assert len(names) == len(range(0, 30000, 7))
    assert all(len(os.fsencode(n)) <= NAME_MAX for n in names)
    assert len({n.split("_")[0] for n in names}) == 1  # one motion, one stem
    assert recorded_file_name("civilization", 2.5333333) == "civilization_2533ms_rec.pkl"
    assert recorded_file_name("civilization") == "civilization_rec.pkl"


# -- the recorder's restarts -------------------------------------------------------------------


@pytest.fixture(scope="module")
def segments_rec(ch, demo_batch):
    return record_batch(demo_batch, ch, PDTracker(), SEGMENTS)


def test_each_failed_attempt_restarts_where_it_ended(segments_rec):
    assert _restarts_where_each_ended(segments_rec) >= 2  # the demo's ramp fails twice on its way down under pd
    for k, m in enumerate(segments_rec.motions):
        chain = sorted((a for a in segments_rec.attempts if a.motion == k), key=lambda a: a.start_time)
        assert chain[0].start_time == 0.0
        last = chain[-1]  # the chain ends in a success, or where no segment is left to win
        assert last.success or m.motion.duration - last.end_time < SEGMENTS.min_segment or \
            len(chain) == 1 + SEGMENTS.max_restarts
    assert [a.pass_index for a in segments_rec.attempts] == sorted(a.pass_index for a in segments_rec.attempts)


def _restarts_where_each_ended(rec) -> int:
    """Asserts that every restart of `rec` starts where its motion's attempt before it ended;
    returns how many restarts there were."""
    restarted = 0
    for k, m in enumerate(rec.motions):
        chain = sorted((a for a in rec.attempts if a.motion == k), key=lambda a: a.start_time)
        for before, after in zip(chain, chain[1:]):
            assert not before.success and after.start_time == pytest.approx(before.end_time, abs=1e-6)
            assert m.motion.duration - after.start_time >= SEGMENTS.min_segment - 1e-6
            restarted += 1
    return restarted


def test_segment_restarts_on_a_device_backend(ch, demo_batch):
    """The device's control loop (recording.device_pass, MuJoCo Warp's CPU device here) takes one
    start time per environment too."""
    pytest.importorskip("mujoco_warp", reason="needs MuJoCo Warp: pip install -e '.[gpu]'")
    failing = [m for m in demo_batch if m.name in ("ramp_descent_then_stand", "glide_up_step")]
    rec = record_batch(failing, ch, PDTracker(), SEGMENTS,
                       BackendSpec(name="mujoco_warp", device="cpu", deterministic=True))
    assert _restarts_where_each_ended(rec) >= 2


def test_restarts_are_bounded(ch, demo_batch):
    one = record_batch(demo_batch, ch, PDTracker(), dataclasses.replace(SEGMENTS, max_restarts=1))
    assert max(a.pass_index for a in one.attempts) == 1
    assert all(sum(a.motion == k for a in one.attempts) <= 2 for k in range(len(demo_batch)))


def test_segment_recovery_is_deterministic_and_does_not_depend_on_threads(ch, demo_batch, segments_rec):
    for again in (record_batch(demo_batch, ch, PDTracker(), SEGMENTS),
                  record_batch(demo_batch, ch, PDTracker(), SEGMENTS, BackendSpec(threads=2))):
        assert len(again.attempts) == len(segments_rec.attempts)
        for a, b in zip(segments_rec.attempts, again.attempts):
            assert (a.motion, a.start_time, a.start_fraction, a.fail_reason) == \
                (b.motion, b.start_time, b.start_fraction, b.fail_reason)
            for field in ("actions", "qpos", "qvel", "contacts", "errors", "ref_time"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), field


# -- the stages: files, manifest, weights, bytes -----------------------------------------------


def _run(root: Path, data: Path, recovery: str, threads: int = 1) -> Path:
    """The demo in `data` recorded, selected and merged under `recovery` as the workflow runs the stages."""
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "x"}], "record": {"recovery": recovery}})
    if not data.exists():
        write_demo(data)
    root.mkdir(parents=True)
    write_manifest(root / "manifest.tsv", index_dataset(data / "dataset.yaml"))
    write_plan(root / "plan.tsv", make_plan(read_manifest(root / "manifest.tsv"), 16))
    rec = config.json_section("record", json.dumps(config.record_physics_keys(cfg["record"])), "--record")
    run_record(root / "plan.tsv", batch_ids(root / "plan.tsv")[0], rec, {"kind": "pd"}, {"name": "mujoco"},
               "builtin:humanoid", 0, threads, root / "record", ["physrec", "record"], progress=lambda s: None)
    sel = config.json_section("selection", json.dumps(config.selection_keys(cfg["selection"], recovery)),
                              "--selection")
    run_select(root / "record", sel, root / "select")
    run_merge("it0", root / "manifest.tsv", root / "plan.tsv", [root / "select"], [root / "record"], None, 1.0,
              root / "merge", progress=lambda s: None)
    return root


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    base = tmp_path_factory.mktemp("segments")
    return {"segments": _run(base / "segments", base / "data", "segments"),
            "parc": _run(base / "parc", base / "data", "parc")}


def test_each_segment_is_a_motion_file_with_its_span(staged):
    root = staged["segments"]
    selected = read_tsv_records(root / "select" / "selected.tsv")
    segments = [r for r in selected if r["status"] == "recorded_segment"]
    assert {r["motion"] for r in segments} == {"climb_step", "ramp_descent_then_stand"}
    info = json.loads((root / "record" / "rollouts.json").read_text())
    assert info["env_info"]["env_kwargs"]["record"]["recovery"] == "segments"
    with open_rollouts(root / "record" / "rollouts.h5") as h5:
        for r in segments:
            mf = read_motion_file(root / "select" / "motions" / r["recorded_file"])
            start, end = float(r["start_time"]), float(r["end_time"])
            assert mf.misc["physrec:start_time"] == start and mf.misc["physrec:end_time"] == end
            assert mf.misc["physrec:attempt"] == r["attempt"] and mf.misc["physrec:recovery"] == "segments"
            steps = round((end - start) * HZ)
            assert mf.motion.num_frames == steps + 1 and steps / HZ >= SEGMENTS.min_segment - 1e-9
            # the gate errors are the segment's own
            errors = kept_error_summary(read_errors(h5, int(r["attempt"].split("_")[1])), steps)
            assert float(r["mean_body_pos_error"]) == pytest.approx(errors["mean_body_pos_error"])
            assert float(r["mean_body_pos_error"]) <= 0.1
    climb = next(r for r in segments if r["motion"] == "climb_step")
    assert float(climb["start_time"]) == 0.0 and climb["fail_reason"] == ""
    assert climb["recorded_file"] == "climb_step_0ms_rec.pkl"
    manifest = read_tsv_records(root / "merge" / "manifest.tsv")
    spans = {(m["name"], m["start_time"], m["end_time"]) for m in manifest if m["status"] == "recorded_segment"}
    assert spans == {(r["motion"], r["start_time"], r["end_time"]) for r in segments}


def test_a_motions_segments_never_weigh_more_than_it(staged):
    manifest = read_tsv_records(staged["segments"] / "merge" / "manifest.tsv")
    source = {r["name"]: r["weight"] for r in read_tsv_records(staged["segments"] / "manifest.tsv")}
    per_motion: dict[str, float] = {}
    for m in manifest:
        if m["weight"]:
            per_motion[m["name"]] = per_motion.get(m["name"], 0.0) + float(m["weight"])
            assert float(m["weight"]) == pytest.approx(
                float(source[m["name"]]) * float(m["recorded_duration"]) / float(m["source_duration"]))
    assert all(w <= float(source[n]) + 1e-9 for n, w in per_motion.items())
    summary = json.loads((staged["segments"] / "merge" / "summary.json").read_text())
    assert summary["motions"]["segments"] == 2 and summary["motions"]["recorded"] == 5
    assert summary["recorded_seconds"] == pytest.approx(sum(float(m["recorded_duration"] or 0) for m in manifest))


def test_parc_recovery_keeps_one_attempt_per_motion(staged):
    selected = read_tsv_records(staged["parc"] / "select" / "selected.tsv")
    assert len(selected) == len({r["motion"] for r in selected}) == 6
    assert not any(r["status"] == "recorded_segment" for r in selected)
    info = json.loads((staged["parc"] / "record" / "rollouts.json").read_text())
    assert "recovery" not in info["env_info"]["env_kwargs"]["record"]  # PARC's hash as before the key


@pytest.mark.parametrize("recovery", ["parc", "segments"])
def test_the_stages_write_the_same_bytes_again_on_any_thread_count(staged, tmp_path, recovery):
    again = _run(tmp_path / "again", staged[recovery].parent / "data", recovery, threads=2)

    def digests(root: Path) -> dict[str, str]:
        files = [root / "record" / n for n in ("rollouts.h5", "rollouts.json", "attempts.tsv")]
        files += sorted((root / "select").rglob("*.pkl")) + [root / "select" / "selected.tsv"]
        files += [root / "merge" / "summary.json"]
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert digests(again) == digests(staged[recovery])

    def manifest(root: Path) -> list[dict[str, str]]:  # but the recorded files' paths, in another folder
        return [{k: v for k, v in r.items() if k != "recorded_path"}
                for r in read_tsv_records(root / "merge" / "manifest.tsv")]
    assert manifest(again) == manifest(staged[recovery])


def test_the_report_shows_each_motions_kept_and_lost_time(staged, tmp_path):
    from physrec.report.plots import gaps, iteration_plots, kept_spans, seconds_per_class, summary_html
    root = staged["segments"]
    manifest = read_tsv_records(root / "merge" / "manifest.tsv")
    spans = kept_spans(manifest)
    source, kept, _ = spans["climb_step"]
    assert kept == [(0.0, pytest.approx(2.0333333, abs=1e-6))]
    assert gaps(source, kept) == [(pytest.approx(2.0333333, abs=1e-6), 3.6)]
    assert gaps(2.0, [(0.5, 1.0), (1.0, 2.0)]) == [(0.0, 0.5)]
    per_class = seconds_per_class(manifest)
    assert per_class["step"][0] == pytest.approx(2.4 + 3.6 + 3.0)  # each motion's source counted once
    assert sum(k for _, k in per_class.values()) == pytest.approx(
        json.loads((root / "merge" / "summary.json").read_text())["recorded_seconds"])
    paths = iteration_plots("it0", root / "merge" / "summary.json", root / "merge" / "manifest.tsv",
                            [root / "record"], tmp_path)
    assert (tmp_path / "kept_time.png") in paths and (tmp_path / "kept_time.png").stat().st_size > 1000
    page = summary_html(root / "merge" / "summary.json", tmp_path / "summary.html",
                        root / "merge" / "manifest.tsv").read_text()
    assert "2 in 2 segments" in page and "kept seconds" in page


def test_a_learned_tracker_restarts_at_each_attempts_own_time(tmp_path, monkeypatch, ch, demo_batch):
    """The observation's targets follow each restart's own start time (one fraction per
    environment): an exported policy that plays the observation's first target frame records the
    attempts pd records, also when a pass is cut into groups of one motion."""
    torch = pytest.importorskip("torch")
    from first_target_policy import FirstTargetFrame
    from physrec.recording import memory
    from physrec.trackers.base import make_tracker
    n = torch.export.Dim("n", min=1)
    path = tmp_path / "p.pt2"
    torch.export.save(torch.export.export(FirstTargetFrame(ch), (torch.zeros(2, 1312),),
                                          dynamic_shapes={"obs": {0: n}}), path)
    tracker = make_tracker({"kind": "exported", "model": str(path), "observation": "parc"}, ch)
    failing = [m for m in demo_batch if m.name in ("climb_step", "ramp_descent_then_stand", "glide_up_step")]
    pd = record_batch(failing, ch, PDTracker(), SEGMENTS)
    whole = record_batch(failing, ch, tracker, SEGMENTS)
    monkeypatch.setattr(memory, "PASS_BUDGET_BYTES", 120 * memory.frame_bytes(1312))  # a motion a group
    cut = record_batch(failing, ch, tracker, SEGMENTS)
    assert any(a.start_fraction not in (0.0,) for a in whole.attempts)  # restarts ran
    assert [(a.motion, a.start_time, a.steps, a.fail_reason) for a in whole.attempts] == \
        [(a.motion, a.start_time, a.steps, a.fail_reason) for a in pd.attempts]
    for a, b in zip(whole.attempts, cut.attempts):
        assert (a.motion, a.start_time, a.steps) == (b.motion, b.start_time, b.steps)
        for k in ("qpos", "actions", "obs"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_a_planner_searches_each_restart_from_its_own_time(ch, demo_batch):
    """The sampling tracker (a planner) under segments: a search too weak to track the glide fails,
    and each restart is searched from where its attempt ended."""
    from physrec.trackers.base import make_tracker
    weak = make_tracker({"kind": "sampling", "samples": 8, "kept": 2, "restarts": 0, "search_passes": 1,
                         "window_retries": 0, "full_length": False}, ch)
    glide = [m for m in demo_batch if m.name == "glide_up_step"]
    rec = record_batch(glide, ch, weak, dataclasses.replace(SEGMENTS, max_restarts=2))
    assert _restarts_where_each_ended(rec) >= 1
    for a in rec.attempts:  # searched in windows of 3 steps from the attempt's own start to its end
        assert a.search["searched_to_s"] == pytest.approx(a.end_time, abs=1e-6)
        assert a.steps // 3 <= a.search["windows"] <= a.steps // 3 + 2


def test_the_summary_counts_motions_not_rows():
    from physrec.stages.merge import first_rows
    row = {"name": "m", "source_path": "a/m.pkl", "start_time": None}
    invalid_twins = [dict(row), dict(row)]  # two bad entries with one name: two motions
    pieces = [{**row, "name": "s", "source_path": "s.pkl", "start_time": t} for t in (0.0, 1.5, 4.0)]
    assert first_rows(invalid_twins + pieces) == invalid_twins + pieces[:1]
