"""Selection (which attempt is kept) and the PARC motion files it writes, via the real pipeline functions.

The pipeline part runs index -> plan -> record (real MuJoCo) -> select -> merge in-process on the
demo dataset, in a temporary working directory (the stages use paths relative to the CWD).
"""

import pickle
from pathlib import Path

import math

import numpy as np
import pytest

from physrec import config
from physrec.motion import quat
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.formats.dataset_yaml import motion_name, read_dataset
from physrec.demo import write_demo
from physrec.stages.index import index_dataset, read_manifest, write_manifest
from physrec.stages.merge import run_merge
from physrec.formats.motion_file import read_motion_file
from physrec.stages.record import run_record
from physrec.stages.select import SELECTED_COLUMNS, choose, run_select
from physrec.formats.tables import read_tsv_records
from physrec.motion.terrain import height_at

PROVENANCE = ("physrec:source_sha256", "physrec:start_time", "physrec:tracker", "physrec:backend",
              "physrec:config_hash", "physrec:physrec_version")


# -- choose: pure logic ----------------------------------------------------------------------------------
def _att(i, fraction, success, *, reason="", mean=0.05, root=0.1, rot=3.0, length=3.0):
    start = fraction * length
    end = length if success else start + 0.5
    return {"attempt": f"traj_{i}", "motion": "m", "start_fraction": repr(float(fraction)),
            "start_time": repr(start), "end_time": repr(end), "kept_end_time": repr(end),
            "success": "true" if success else "false", "fail_reason": "" if success else reason,
            "mean_body_pos_error": repr(mean), "max_root_pos_error": repr(root), "max_root_rot_error_deg": repr(rot)}


NO_LIMITS = {"max_mean_body_pos_error_m": None, "max_root_pos_error_m": None, "max_root_rot_error_deg": None,
             "min_duration_s": 0.0}


def test_choose_full_length_first():
    tries = [_att(0, 0.0, True), _att(5, 0.1, True)]
    status, chosen, why = choose(tries, NO_LIMITS, 30)
    assert (status, chosen["attempt"], why) == ("recorded", "traj_0", "")
    # Order of the rows does not matter.
    status, chosen, _ = choose(list(reversed(tries)), NO_LIMITS, 30)
    assert (status, chosen["attempt"]) == ("recorded", "traj_0")


def test_choose_earliest_later_start():
    tries = [_att(9, 0.4, True), _att(0, 0.0, False, reason="root_position"), _att(7, 0.2, True),
             _att(3, 0.1, False, reason="root_rotation")]
    status, chosen, why = choose(tries, NO_LIMITS, 30)
    assert (status, chosen["attempt"], why) == ("recorded_later_start", "traj_7", "")


def test_choose_failed_gives_the_last_reason():
    tries = [_att(0, 0.0, False, reason="root_position"), _att(4, 0.2, False, reason="body_offset:head"),
             _att(2, 0.1, False, reason="root_rotation")]
    assert choose(tries, NO_LIMITS, 30) == ("failed", None, "body_offset:head")
    assert choose([], NO_LIMITS, 30) == ("failed", None, "no attempt")


@pytest.mark.parametrize("limits, needle", [
    ({"max_mean_body_pos_error_m": 0.1}, "mean_body_pos_error"),
    ({"max_root_pos_error_m": 0.2}, "max_root_pos_error"),
    ({"max_root_rot_error_deg": 30}, "max_root_rot_error_deg 35.000 deg > 30 deg"),
    ({"min_duration_s": 2.5}, "duration"),
])
def test_choose_rejects_by_thresholds(limits, needle):
    sel = {**NO_LIMITS, **limits}
    tries = [_att(0, 0.0, False, reason="root_position"), _att(1, 0.3, True, mean=0.15, root=0.3, rot=35.0)]
    status, chosen, why = choose(tries, sel, 30)
    assert status == "rejected" and chosen is None
    assert needle in why


def test_choose_thresholds_at_the_limit_pass():
    tries = [_att(0, 0.0, True, mean=0.1, root=0.2, rot=28.6)]
    sel = {"max_mean_body_pos_error_m": 0.1, "max_root_pos_error_m": 0.2,
           "max_root_rot_error_deg": 28.6, "min_duration_s": 3.0}
    assert choose(tries, sel, 30)[0] == "recorded"


def test_choose_rejected_full_length_falls_back_to_a_passing_later_start():
    tries = [_att(0, 0.0, True, mean=0.5), _att(1, 0.1, True, mean=0.05)]
    status, chosen, _ = choose(tries, {**NO_LIMITS, "max_mean_body_pos_error_m": 0.1}, 30)
    assert (status, chosen["attempt"]) == ("recorded_later_start", "traj_1")


# -- the pipeline functions on the demo dataset ----------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("selmerge")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = config.validate({"iterations": [{"name": "it0", "dataset": "data/dataset.yaml"}]})
        write_demo("data")
        write_manifest("manifest.tsv", index_dataset("data/dataset.yaml"))
        write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
        batches = batch_ids("plan.tsv")
        assert len(batches) == 1
        b = batches[0]
        run_record("plan.tsv", b, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, "builtin:humanoid", 0, 1, f"record/{b}",
                   ["physrec", "record"], progress=lambda s: None)
        rows = run_select(f"record/{b}", cfg["selection"], f"select/{b}")
        summary = run_merge("it0", "manifest.tsv", "plan.tsv", [root / "select" / b], [root / "record" / b],
                            None, 1.0, "out")
        yield {"root": root, "batch": b, "rows": {r["motion"]: r for r in rows}, "summary": summary, "cfg": cfg}


def _source_path(p, name):
    """Where write_demo put a motion (found through its dataset YAML, not assumed)."""
    return next(e.path for e in read_dataset(p["root"] / "data" / "dataset.yaml") if motion_name(e.path) == name)


def _recorded_path(p, name):
    return p["root"] / "select" / p["batch"] / "motions" / f"{name}_rec.pkl"


def test_selected_table(pipeline):
    rows = pipeline["rows"]
    assert set(rows) == {"stand_flat", "stand_step_top", "wave_flat", "climb_step", "ramp_descent_then_stand",
                         "glide_up_step"}
    assert rows["stand_flat"]["status"] == "recorded"
    assert rows["stand_step_top"]["status"] == "recorded"
    for name in ("climb_step", "glide_up_step"):  # pd fails both
        assert rows[name]["status"] == "failed" and rows[name]["fail_reason"]
        assert rows[name]["recorded_file"] is None
    assert rows["ramp_descent_then_stand"]["status"] == "recorded_later_start"
    assert rows["ramp_descent_then_stand"]["start_fraction"] > 0
    on_disk = read_tsv_records(pipeline["root"] / "select" / pipeline["batch"] / "selected.tsv")
    assert [r["motion"] for r in on_disk] == list(rows)
    assert list(on_disk[0]) == SELECTED_COLUMNS
    # Exactly the recorded motions have files.
    files = sorted(p.name for p in (pipeline["root"] / "select" / pipeline["batch"] / "motions").glob("*.pkl"))
    assert files == sorted(f"{n}_rec.pkl" for n, r in rows.items() if r["status"].startswith("recorded"))


def test_recorded_file_in_parc_layout(pipeline):
    for name, row in pipeline["rows"].items():
        if not row["status"].startswith("recorded"):
            continue
        raw = _recorded_path(pipeline, name).read_bytes()
        outer = pickle.loads(raw)  # plain pickle, as PARC loads it
        assert isinstance(outer, dict) and set(outer) == {"motion_data", "terrain_data", "misc_data"}
        assert all(isinstance(outer[k], bytes) for k in outer)
        md, td, misc = (pickle.loads(outer[k]) for k in ("motion_data", "terrain_data", "misc_data"))
        assert list(md) == ["root_pos", "root_rot", "joint_rot", "body_contacts", "fps", "loop_mode"]
        n = md["root_pos"].shape[0]
        assert md["fps"] == 30 and isinstance(md["fps"], int)
        assert md["loop_mode"] == "CLAMP"
        assert md["root_pos"].shape == (n, 3) and md["root_pos"].dtype == np.float32
        assert md["root_rot"].shape == (n, 4) and np.all(md["root_rot"][:, 3] >= 0)
        np.testing.assert_allclose(np.linalg.norm(md["root_rot"], axis=-1), 1.0, atol=1e-5)
        assert md["joint_rot"].shape == (n, 14, 4) and md["joint_rot"].dtype == np.float32
        assert md["body_contacts"].shape == (n, 15)
        assert set(np.unique(md["body_contacts"])) <= {0.0, 1.0}
        assert md["body_contacts"][:, 11].sum() > 0 and md["body_contacts"][:, 14].sum() > 0  # the feet
        assert md["body_contacts"][:, 0].sum() == 0
        assert n == round(row["recorded_duration"] * 30) + 1
        assert {"hf", "hf_maxmin", "min_point", "dx"} <= set(td)
        assert td["hf"].ndim == 2 and td["hf_maxmin"].shape == td["hf"].shape + (2,)
        for key in PROVENANCE:
            assert key in misc, key
        assert misc["physrec:tracker"] == "tracker:pd"
        assert misc["physrec:backend"].startswith("mujoco")
        assert misc["physrec:start_time"] == pytest.approx(row["start_time"])
        # The same file through physrec's validating reader.
        mf = read_motion_file(_recorded_path(pipeline, name))
        np.testing.assert_array_equal(mf.motion.root_pos, md["root_pos"])
        assert mf.terrain is not None and mf.misc is not None and not mf.warnings


def test_provenance_points_at_the_source(pipeline):
    from physrec.formats.hashing import sha256_file
    for name in ("stand_flat", "ramp_descent_then_stand"):
        misc = read_motion_file(_recorded_path(pipeline, name)).misc
        assert misc["physrec:source_sha256"] == sha256_file(_source_path(pipeline, name))
        assert misc["physrec:config_hash"] and misc["physrec:physrec_version"]


def test_recorded_motion_is_in_source_coordinates(pipeline):
    for name in ("stand_flat", "stand_step_top", "wave_flat", "ramp_descent_then_stand"):
        src = read_motion_file(_source_path(pipeline, name))
        rec = read_motion_file(_recorded_path(pipeline, name))
        t0 = rec.misc["physrec:start_time"]
        sm = src.motion
        x = t0 * sm.fps
        f0 = int(np.floor(x + 1e-9))
        w = x - f0
        ref_root = (1 - w) * sm.root_pos[f0].astype(np.float64) + w * sm.root_pos[min(f0 + 1, sm.num_frames - 1)]
        assert np.linalg.norm(rec.motion.root_pos[0] - ref_root) < 0.05, name
        # Heights of the recorded terrain are the source terrain's under the recorded path.
        xy = rec.motion.root_pos[:, :2].astype(np.float64)
        np.testing.assert_array_equal(height_at(rec.terrain, xy), height_at(src.terrain, xy))
        # Physics: the recording is not a copy of the reference but stays close to it.
        end = rec.motion.root_pos[-1]
        assert np.linalg.norm(end - sm.root_pos[-1]) < 0.3, name
        assert not np.array_equal(rec.motion.root_pos, sm.root_pos[f0:f0 + rec.motion.num_frames])
        if name.startswith("stand"):
            assert t0 == 0.0
            np.testing.assert_allclose(rec.motion.root_pos[0], sm.root_pos[0], atol=1e-6)
            np.testing.assert_allclose(quat.angle_between(rec.motion.root_rot[0].astype(np.float64),
                                                          sm.root_rot[0].astype(np.float64)), 0, atol=1e-5)


def test_later_start_provenance(pipeline):
    rec = read_motion_file(_recorded_path(pipeline, "ramp_descent_then_stand"))
    assert rec.misc["physrec:start_time"] > 0
    assert rec.misc["physrec:start_fraction"] > 0
    src_len = read_motion_file(_source_path(pipeline, "ramp_descent_then_stand")).motion.duration
    # Control steps of 1/30 s from the start up to the reference's end: never past it.
    remaining = src_len - rec.misc["physrec:start_time"]
    assert remaining - 1 / 30 < rec.motion.duration <= remaining + 1e-9
    assert src_len - 1 / 30 < rec.misc["physrec:end_time"] <= src_len + 1e-9
    assert rec.misc["physrec:end_time"] == pytest.approx(rec.misc["physrec:start_time"] + rec.motion.duration)


def test_merge_outputs(pipeline):
    root, s = pipeline["root"], pipeline["summary"]
    m = s["motions"]
    assert (m["total"], m["valid"], m["invalid"]) == (6, 6, 0)
    assert (m["recorded"], m["recorded_full_length"], m["recorded_later_start"], m["failed"]) == (4, 3, 1, 2)
    entries = read_dataset(root / "out" / "dataset.yaml")
    assert sorted(motion_name(e.path) for e in entries) == sorted(
        f"{n}_rec" for n in ("stand_flat", "stand_step_top", "wave_flat", "ramp_descent_then_stand"))
    for e in entries:
        assert e.path.is_file()
        read_motion_file(e.path)
    manifest = {r["name"]: r for r in read_tsv_records(root / "out" / "manifest.tsv")}
    ramp = manifest["ramp_descent_then_stand"]
    # A motion recorded from a later start counts for the part it covers (source weight = its duration here).
    assert float(ramp["weight"]) == pytest.approx(float(ramp["recorded_duration"]), rel=1e-9)
    assert float(manifest["stand_flat"]["weight"]) == pytest.approx(2.4)
    assert manifest["glide_up_step"]["status"] == "failed" and manifest["glide_up_step"]["weight"] == ""


# -- PARC's own sample motions and character through the same functions -----------------------------------
SHARED = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"
PARC_SAMPLES = ("TEASER_TERRAIN", "civilization", "sfu")


@pytest.fixture(scope="module")
def parc_pipeline(tmp_path_factory):
    missing = [n for n in (*[f"{s}.pkl" for s in PARC_SAMPLES], "humanoid.xml") if not (SHARED / n).is_file()]
    if missing:
        pytest.skip(f"PARC samples absent from {SHARED} (../shared not mounted): {', '.join(missing)}")
    from physrec.formats.dataset_yaml import write_dataset
    root = tmp_path_factory.mktemp("parc")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        # end_tolerance 0.5 s: sfu (0.47 s long) counts as reaching its end whatever the physics does,
        # and no quality thresholds, so that its recorded file can be checked.
        cfg = config.validate({"iterations": [{"name": "it0", "dataset": "d.yaml"}],
                               "record": {"termination": {"end_tolerance_s": 0.5}}, "selection": NO_LIMITS})
        write_dataset("d.yaml", [(str(SHARED / f"{s}.pkl"), 1.0) for s in PARC_SAMPLES])
        rows = index_dataset("d.yaml")
        write_manifest("manifest.tsv", rows)
        write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
        b = batch_ids("plan.tsv")[0]
        run_record("plan.tsv", b, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, str(SHARED / "humanoid.xml"), 0, 1, f"record/{b}",
                   ["physrec", "record"], progress=lambda s: None)
        selected = run_select(f"record/{b}", cfg["selection"], f"select/{b}")
        yield {"root": root, "batch": b, "index": rows, "rows": {r["motion"]: r for r in selected}}


def test_parc_samples_index_valid(parc_pipeline):
    rows = {r["name"]: r for r in parc_pipeline["index"]}
    assert set(rows) == set(PARC_SAMPLES)
    assert all(r["valid"] for r in rows.values()), rows
    assert rows["TEASER_TERRAIN"]["frames"] == 58 and rows["TEASER_TERRAIN"]["terrain_shape"] == "102x102"
    assert rows["civilization"]["frames"] == 254 and rows["sfu"]["frames"] == 15


def test_parc_samples_recorded_in_their_own_coordinates(parc_pipeline):
    root, b = parc_pipeline["root"], parc_pipeline["batch"]
    attempts = read_tsv_records(root / "record" / b / "attempts.tsv")
    tries = {n: [a for a in attempts if a["motion"] == n] for n in PARC_SAMPLES}
    # Shorter than 2 s: only the full-length pass.
    assert [a["start_fraction"] for a in tries["TEASER_TERRAIN"]] == ["0.0"]
    assert [a["start_fraction"] for a in tries["sfu"]] == ["0.0"]
    assert parc_pipeline["rows"]["sfu"]["status"] == "recorded"
    for name, row in parc_pipeline["rows"].items():
        if not row["status"].startswith("recorded"):
            assert row["fail_reason"], name
            continue
        src = read_motion_file(SHARED / f"{name}.pkl")
        rec_path = root / "select" / b / "motions" / f"{name}_rec.pkl"
        outer = pickle.loads(rec_path.read_bytes())
        md = pickle.loads(outer["motion_data"])
        assert md["fps"] == 30 and md["joint_rot"].shape[1:] == (14, 4) and np.all(md["root_rot"][:, 3] >= 0)
        rec = read_motion_file(rec_path)
        if row["start_fraction"] == 0.0:
            # Frame 0 is the source's frame 0, in the source's own world coordinates (not the batch's).
            np.testing.assert_allclose(rec.motion.root_pos[0], src.motion.root_pos[0], atol=1e-4)
            assert quat.angle_between(rec.motion.root_rot[0].astype(float),
                                      src.motion.root_rot[0].astype(float)) < 1e-3
        xy = rec.motion.root_pos[:, :2].astype(np.float64)
        np.testing.assert_array_equal(height_at(rec.terrain, xy), height_at(src.terrain, xy))
        assert rec.terrain.dx == src.terrain.dx


def test_parc_recording_holds_no_frame_at_or_past_its_termination(parc_pipeline):
    root, b = parc_pipeline["root"], parc_pipeline["batch"]
    sfu = next(a for a in read_tsv_records(root / "record" / b / "attempts.tsv") if a["motion"] == "sfu")
    assert sfu["success"] == "true" and sfu["fail_reason"], "sfu falls within the end tolerance"
    rec = read_motion_file(root / "select" / b / "motions" / "sfu_rec.pkl")
    assert int(sfu["kept_steps"]) == int(sfu["steps"]) - 1
    assert rec.motion.num_frames == int(sfu["kept_steps"]) + 1  # the reset frame + steps before termination


def test_sfu_fall_is_rejected_by_the_default_thresholds(tmp_path, monkeypatch):
    """Under pd, sfu falls (root rotation past 75 degrees) inside PARC's last-2/30-s window: PARC's rule
    calls it a success; physrec's default quality thresholds keep it out of the next dataset."""
    if not (SHARED / "sfu.pkl").is_file():
        pytest.skip(f"PARC samples absent from {SHARED} (../shared not mounted)")
    from physrec.formats.dataset_yaml import write_dataset
    monkeypatch.chdir(tmp_path)
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "d.yaml"}]})
    write_dataset("d.yaml", [(str(SHARED / "sfu.pkl"), 1.0)])
    write_manifest("manifest.tsv", index_dataset("d.yaml"))
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
    b = batch_ids("plan.tsv")[0]
    run_record("plan.tsv", b, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, "builtin:humanoid", 0, 1, f"record/{b}",
               ["physrec", "record"], progress=lambda s: None)
    [attempt] = read_tsv_records(f"record/{b}/attempts.tsv")
    assert attempt["success"] == "true" and attempt["fail_reason"] == "root_rotation"
    [row] = run_select(f"record/{b}", cfg["selection"], f"select/{b}")
    assert row["status"] == "rejected" and "error" in row["fail_reason"], row
    assert not list(Path(f"select/{b}/motions").iterdir())


# -- a motion whose terrain has another cell size ------------------------------------------------------------
def test_odd_terrain_cell_size_does_not_break_the_batch(tmp_path, monkeypatch):
    from physrec.formats.dataset_yaml import write_dataset
    from physrec.demo import demo_motions
    from physrec.formats.motion_file import MotionFile, write_motion_file
    from physrec.motion.terrain import Heightfield

    monkeypatch.chdir(tmp_path)
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "d.yaml"}]})
    demo = demo_motions()
    odd = demo["stand_flat"]
    hf = odd.terrain.hf
    odd = MotionFile(odd.motion, Heightfield(hf=hf, min_point=odd.terrain.min_point, dx=0.5,
                                             hf_maxmin=odd.terrain.hf_maxmin), odd.misc)
    write_motion_file("m/stand_flat.pkl", demo["stand_flat"])
    write_motion_file("m/wave_flat.pkl", demo["wave_flat"])
    write_motion_file("m/odd_dx.pkl", odd)
    write_dataset("d.yaml", [("m/stand_flat.pkl", 1.0), ("m/wave_flat.pkl", 1.0), ("m/odd_dx.pkl", 1.0)])
    rows = index_dataset("d.yaml")
    write_manifest("manifest.tsv", rows)
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
    odd_row = next(r for r in rows if r["name"] == "odd_dx")
    recorded = set()
    for b in batch_ids("plan.tsv"):  # must not raise: a bad motion never stops the others
        run_record("plan.tsv", b, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, "builtin:humanoid", 0, 1, f"record/{b}",
                   ["physrec", "record"], progress=lambda s: None)
        recorded |= {r["motion"] for r in run_select(f"record/{b}", cfg["selection"], f"select/{b}")
                     if r["status"].startswith("recorded")}
    assert {"stand_flat", "wave_flat"} <= recorded
    assert not odd_row["valid"]
    assert "odd_dx.pkl" in odd_row["error"] and "dx" in odd_row["error"]


def test_choose_never_keeps_a_non_finite_error_even_without_thresholds():
    """NaN passes every `value > limit`: a diverged attempt must be refused explicitly."""
    tries = [_att(0, 0.0, True, mean=float("nan"), root=0.2, rot=0.5)]
    for sel in (NO_LIMITS, {"max_mean_body_pos_error_m": 0.1}):
        status, chosen, why = choose(tries, sel, 30)
        assert status == "rejected" and chosen is None and "mean_body_pos_error is nan" in why, why


def test_the_summary_says_which_threshold_rejected_successes_and_what_to_change():
    from physrec.stages.merge import rejected_by, summary_markdown, summarize
    rows = [{"name": n, "class": "", "status": st, "valid": True, "fail_reason": why, "source_duration": 2.0,
             "recorded_duration": None} for n, st, why in [
        ("a", "rejected", "mean_body_pos_error 0.168 m > 0.1 m"),
        ("b", "rejected", "mean_body_pos_error 0.129 m > 0.1 m"),
        ("c", "rejected", "max_root_rot_error_deg 72.000 deg > 45.0 deg"),
        ("d", "failed", "root_position")]]
    assert rejected_by(rows) == {
        "max_mean_body_pos_error_m": {"motions": 2, "worst": 0.168, "limit": 0.1, "unit": "m"},
        "max_root_rot_error_deg": {"motions": 1, "worst": 72.0, "limit": 45.0, "unit": "deg"}}
    text = summary_markdown(summarize("it", rows, []))
    assert "Succeeded in simulation, rejected by selection" in text
    assert "| `max_mean_body_pos_error_m` | 2 | 0.168 m | 0.1 m |" in text
    assert "Failure reasons (motions): root_position (1)" in text
