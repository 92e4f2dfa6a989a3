"""Recording a batch with real MuJoCo physics: outcomes, later-start retries, initial states, determinism."""

import re

import numpy as np
import pytest

from physrec.motion import quat
from physrec.demo import FPS, STAND_HEIGHT
from physrec.formats.motion_file import MotionData
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.plan import start_plan
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BackendSpec
from physrec.trackers.pd import PDTracker
from physrec.motion.terrain import Heightfield, height_at

PD = PDTracker()


@pytest.fixture(scope="module")
def demo_rec(ch, demo_batch):
    return record_batch(demo_batch, ch, PD, RecordSettings())


def _spinning_glide():
    """3.4 s: the root glides 3 m along x while yawing and rolling, arms and knees moving.

    The pd tracker cannot move the root, so this fails from the start and gets later starts at
    non-integer frame times (0.34 s = frame 10.2, ...), with non-zero root angular velocity.
    """
    n = int(round(3.4 * FPS)) + 1
    t = np.arange(n) / FPS
    hf = np.zeros((16, 8), dtype=np.float32)
    terrain = Heightfield(hf=hf, min_point=np.array([-1.4, -1.4], dtype=np.float32), dx=0.4,
                          hf_maxmin=np.stack([hf + 1, hf - 1], axis=-1))
    root_pos = np.stack([3.0 * t / t[-1], 0.1 * np.sin(t), STAND_HEIGHT + 0.03 * np.sin(3 * t)], axis=-1)
    yaw = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), 0.6 * t)
    roll = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), 0.15 * np.sin(2 * t))
    root_rot = quat.positive_w(quat.mul(yaw, roll))
    joint_rot = quat.identity((n, 14))
    joint_rot[:, 2] = quat.exp_map_to_quat(np.stack([1.2 + 0.3 * np.sin(2 * t), 0.2 * t, 0.1 * np.cos(t)], -1))
    joint_rot[:, 5] = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), -1.3 + 0.2 * np.sin(3 * t))
    joint_rot[:, 3] = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), 0.5 + 0.4 * np.sin(t))
    joint_rot[:, 9] = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), 0.3 + 0.2 * np.sin(4 * t))
    contacts = np.zeros((n, 15), dtype=np.float32)
    motion = MotionData(root_pos=root_pos.astype(np.float32), root_rot=root_rot.astype(np.float32),
                        joint_rot=joint_rot.astype(np.float32), body_contacts=contacts, fps=FPS)
    return BatchMotion("spinning_glide", motion, terrain)


def _attempts(rec, name):
    k = [m.name for m in rec.motions].index(name)
    return [a for a in rec.attempts if a.motion == k], rec.motions[k].motion


def _length(m):
    return (m.num_frames - 1) / m.fps


def _reference_at(ch, m, t, offset):
    """The reference pose and PARC's initial velocities at time t, computed here from the raw frames."""
    x = t * m.fps
    f0 = int(np.floor(x + 1e-9))
    f1 = min(f0 + 1, m.num_frames - 1)
    w = x - f0
    rp = m.root_pos.astype(np.float64)
    rr = quat.normalize(m.root_rot.astype(np.float64))
    jr = quat.normalize(m.joint_rot.astype(np.float64))
    root_pos = (1 - w) * rp[f0] + w * rp[f1] + np.array([offset[0], offset[1], 0.0])
    root_rot = quat.slerp(rr[f0], rr[f1], w)
    joint_rot = quat.slerp(jr[f0], jr[f1], np.full(14, w))
    # Velocities from the frame at or before t, forward differences (PARC's initialisation).
    a, b = (f0, f0 + 1) if f0 + 1 < m.num_frames else (f0 - 1, f0)
    lin = (rp[b] - rp[a]) * m.fps
    ang = quat.quat_to_exp_map(quat.mul(rr[b], quat.conj(rr[a]))) * m.fps  # world frame
    dof = ch.dof_vel(jr[a], jr[b], 1.0 / m.fps)
    return root_pos, root_rot, joint_rot, lin, ang, dof


# -- outcomes of the demo under the pd tracker -----------------------------------------------------
def test_standing_motions_succeed_from_the_start(demo_rec):
    for name in ("stand_flat", "stand_step_top"):
        tries, m = _attempts(demo_rec, name)
        assert len(tries) == 1, name
        a = tries[0]
        assert a.start_fraction == 0.0 and a.start_time == 0.0
        assert a.success and a.fail_reason == "" and not a.terminated
        assert a.end_time == pytest.approx(_length(m))
        assert a.steps == m.num_frames - 1
        assert a.qpos.shape == (a.steps + 1, 43) and a.qvel.shape == (a.steps + 1, 34)
        assert a.actions.shape == (a.steps, 28) and a.errors.shape == (a.steps, 4)
        assert a.contacts.shape == (a.steps + 1, 15)
        # Physics, not a copy of the reference: the root moved a little, stayed up, feet on the ground.
        assert 0.0 < a.errors[:, 0].max() < 0.2
        assert np.all(a.qpos[:, 2] - a.qpos[0, 2] > -0.1)
        assert a.contacts[1:, 11].mean() > 0.9 and a.contacts[1:, 14].mean() > 0.9
        assert not a.contacts[:, 0].any()  # the pelvis never touches the ground


@pytest.mark.parametrize("name", ["glide_up_step", "climb_step"])
def test_a_step_up_fails_from_every_start_it_tries(demo_rec, name):
    """glide_up_step: nothing can follow its reference; climb_step: a feasible step-up, but
    pd cannot shift the weight onto the step."""
    tries, m = _attempts(demo_rec, name)
    L = _length(m)
    settings = RecordSettings()
    assert tries and not any(a.success for a in tries)
    assert all(a.fail_reason for a in tries)
    # Never from a start leaving less than 2 s; every start leaving at least 2 s is tried, in order.
    for a in tries:
        assert (1 - a.start_fraction) * L >= settings.min_remaining - 1e-9
    expected = [0.0] + [f for f in settings.start_fractions if (1 - f) * L >= settings.min_remaining - 1e-9]
    assert [a.start_fraction for a in tries] == expected
    assert len(expected) < 1 + len(settings.start_fractions)  # some were skipped
    for a in tries:
        assert a.start_time == pytest.approx(a.start_fraction * L)
        assert a.end_time < L - settings.termination.end_tolerance


def test_ramp_fails_from_zero_then_succeeds_later_and_stops(demo_rec):
    tries, m = _attempts(demo_rec, "ramp_descent_then_stand")
    assert tries[0].start_fraction == 0.0 and not tries[0].success
    ok = [i for i, a in enumerate(tries) if a.success]
    assert ok, "no later start succeeded"
    first = ok[0]
    assert first == len(tries) - 1, "starts after the first success were tried"
    assert tries[first].start_fraction > 0.0
    assert tries[first].end_time == pytest.approx(_length(m))
    fr = [a.start_fraction for a in tries]
    assert fr == sorted(fr) and len(set(fr)) == len(fr)


def test_attempts_are_in_pass_order(demo_rec):
    fr = [a.start_fraction for a in demo_rec.attempts]
    assert fr == sorted(fr)
    assert demo_rec.sim_steps == sum(a.steps for a in demo_rec.attempts) * 4


def test_actions_are_clipped_reference_targets(ch, demo_rec):
    for a in demo_rec.attempts:
        assert np.all(a.actions >= ch.action_low.astype(np.float32) - 1e-6)
        assert np.all(a.actions <= ch.action_high.astype(np.float32) + 1e-6)
    # pd tracker: target = reference pose one control step ahead.
    tries, m = _attempts(demo_rec, "wave_flat")
    a = tries[0]
    for k in (0, 10, 40):
        _, _, jr, *_ = _reference_at(ch, m, (k + 1) / FPS, (0.0, 0.0))
        np.testing.assert_allclose(a.actions[k], ch.clip_action(ch.joint_rot_to_dof(jr[None]))[0], atol=1e-5)


# -- initial state ----------------------------------------------------------------------------------------
def _check_initial_states(ch, rec, name, require_later=True):
    tries, m = _attempts(rec, name)
    k = [mm.name for mm in rec.motions].index(name)
    offset = rec.tiled.offsets[k]
    later = [a for a in tries if a.start_fraction > 0]
    if require_later:
        assert later, f"{name}: no later start to check"
    for a in tries:
        assert a.start_time == pytest.approx(a.start_fraction * _length(m), abs=1e-12)
        root_pos, root_rot, joint_rot, lin, ang, dof = _reference_at(ch, m, a.start_time, offset)
        want = ch.pose_to_qpos(root_pos, root_rot, joint_rot)
        np.testing.assert_allclose(a.qpos[0], want, atol=1e-9, err_msg=f"{name} start {a.start_fraction}")
        want_v = ch.velocities_to_qvel(root_rot, lin, ang, dof)
        np.testing.assert_allclose(a.qvel[0], want_v, atol=1e-7, err_msg=f"{name} start {a.start_fraction}")
        # The offset puts the motion on its own terrain in the batch's world.
        xy = m.root_pos[:, :2].astype(np.float64)
        np.testing.assert_allclose(height_at(rec.tiled.world, xy + offset), height_at(rec.motions[k].terrain, xy))
    return tries


def test_attempt_starts_on_the_reference_frame(ch, demo_rec):
    tries = _check_initial_states(ch, demo_rec, "ramp_descent_then_stand")
    assert any(abs(a.start_time * FPS - round(a.start_time * FPS)) > 1e-6 for a in tries)  # interpolated starts
    _check_initial_states(ch, demo_rec, "glide_up_step")
    _check_initial_states(ch, demo_rec, "climb_step")
    _check_initial_states(ch, demo_rec, "stand_step_top", require_later=False)


def test_attempt_starts_with_the_references_velocities(ch, demo_batch):
    """A rotating, translating reference: root angular velocity and DOF velocities at non-integer frame times."""
    rec = record_batch([demo_batch[0], _spinning_glide()], ch, PD, RecordSettings())
    tries = _check_initial_states(ch, rec, "spinning_glide")
    assert len(tries) >= 3
    assert all(not a.success for a in tries)
    for a in tries:
        assert np.linalg.norm(a.qvel[0, 3:6]) > 0.3  # the root is turning
        assert np.linalg.norm(a.qvel[0, 0:3]) > 0.5  # and moving


# -- start plan ---------------------------------------------------------------------------------------------
def test_start_plan():
    lengths = np.array([1.0, 2.5, 3.0, 10.0, 2.0])
    pending = np.array([True, True, False, True, True])
    full = start_plan(lengths, 0.0, pending, 2.0)
    np.testing.assert_array_equal(full, pending)  # the full pass runs for every pending motion, even short ones
    assert full is not pending
    # (1 - 0.2) * L >= 2: 0.8, 2.0, 2.4, 8.0, 1.6
    np.testing.assert_array_equal(start_plan(lengths, 0.2, pending, 2.0), [False, True, False, True, False])
    # (1 - 0.5) * L: 0.5, 1.25, 1.5, 5.0, 1.0
    np.testing.assert_array_equal(start_plan(lengths, 0.5, pending, 2.0), [False, False, False, True, False])
    np.testing.assert_array_equal(start_plan(lengths, 0.5, pending, 0.0), pending)
    np.testing.assert_array_equal(start_plan(lengths, 0.3, np.zeros(5, bool), 0.0), np.zeros(5, bool))
    np.testing.assert_array_equal(start_plan(lengths, 0.0, pending, 100.0), pending)


def test_short_motion_gets_only_the_full_pass(ch, demo_batch):
    glide = next(b for b in demo_batch if b.name == "glide_up_step")
    m = glide.motion  # cut to 1.5 s: fails, and no later start leaves 2 s
    short = MotionData(root_pos=m.root_pos[:46], root_rot=m.root_rot[:46], joint_rot=m.joint_rot[:46],
                       body_contacts=m.body_contacts[:46], fps=m.fps)
    rec = record_batch([BatchMotion("short_climb", short, glide.terrain)], ch, PD, RecordSettings())
    assert [a.start_fraction for a in rec.attempts] == [0.0] and not rec.attempts[0].success


# -- determinism ------------------------------------------------------------------------------------------
def _assert_same_recording(r1, r2):
    assert len(r1.attempts) == len(r2.attempts)
    for a, b in zip(r1.attempts, r2.attempts):
        assert (a.motion, a.start_fraction, a.start_time, a.end_time, a.success, a.fail_reason) == \
               (b.motion, b.start_fraction, b.start_time, b.end_time, b.success, b.fail_reason)
        for field in ("actions", "qpos", "qvel", "contacts", "errors", "ref_time"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x, y), field  # bit for bit
    np.testing.assert_array_equal(r1.tiled.offsets, r2.tiled.offsets)


def test_recording_is_deterministic(ch, demo_batch, demo_rec):
    again = record_batch(demo_batch, ch, PD, RecordSettings())
    _assert_same_recording(demo_rec, again)


def test_recording_does_not_depend_on_threads(ch, demo_batch, demo_rec):
    two = record_batch(demo_batch, ch, PD, RecordSettings(), BackendSpec(threads=2))
    _assert_same_recording(demo_rec, two)


def test_several_control_steps_per_call_change_no_outcome(ch, demo_batch, demo_rec):
    """Open-loop trackers run up to max_steps_per_call control steps per simulator call; an
    attempt that terminates mid-call is cut at its termination step, exactly as step by step."""
    one = record_batch(demo_batch, ch, PD, RecordSettings(max_steps_per_call=1))
    assert [(a.motion, a.start_fraction, a.steps, a.success, a.fail_reason) for a in one.attempts] == \
        [(a.motion, a.start_fraction, a.steps, a.success, a.fail_reason) for a in demo_rec.attempts]
    for a, b in zip(one.attempts, demo_rec.attempts):
        # Same physics; only the solver's warm start differs at call boundaries.
        assert np.abs(a.qpos - b.qpos).max() < 1e-3
        np.testing.assert_array_equal(a.actions, b.actions)


def test_pass_progress_says_rate_and_time_left(monkeypatch):
    from physrec.progress import PassProgress
    monkeypatch.setenv("PHYSREC_PROGRESS", "lines")
    lines: list[str] = []
    p = PassProgress(lines.append, "[b] pass 1/6", total=2, every=0.0)
    p.tick(10, 40, 2, 1 / 30)
    p(0, True)
    p.tick(20, 40, 1, 1 / 30)
    p(1, False)
    assert re.fullmatch(r"\[b\] pass 1/6: 0/2 done, 0 succeeded; step 10/40, [0-9.]+ motion-s/s, ~\d+ s left", lines[0])
    assert lines[1].startswith("[b] pass 1/6: 1/2 done, 1 succeeded; step 20/40")
    assert lines[-1] == "[b] pass 1/6: 2/2 done, 1 succeeded"
    assert p.motion_seconds == pytest.approx((2 * 10 + 1 * 10) / 30)


def test_a_record_job_on_a_terminal_draws_a_bar_and_logs_plain_lines(tmp_path):
    """`physrec record` with a terminal for its output (a pty): a tqdm bar there; its log
    file holds the same progress as plain lines, with no bar in them."""
    import fcntl
    import json
    import os
    import pty
    import struct
    import termios
    import subprocess
    import sys
    from physrec import config
    from physrec.demo import write_demo
    from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
    from physrec.stages.index import index_dataset, read_manifest, write_manifest
    write_demo(tmp_path / "data")
    write_manifest(tmp_path / "manifest.tsv", [r for r in index_dataset(tmp_path / "data" / "dataset.yaml")
                                               if r["name"] == "glide_up_step"])
    write_plan(tmp_path / "plan.tsv", make_plan(read_manifest(tmp_path / "manifest.tsv"), 16))
    rec = config.record_physics_keys(config.validate({"iterations": [{"name": "i", "dataset": "d"}]})["record"])
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal's size
    env = {k: v for k, v in os.environ.items() if k != "PHYSREC_PROGRESS"}
    job = subprocess.Popen(
        [sys.executable, "-m", "physrec", "--log", str(tmp_path / "record.log"), "record", "--plan",
         str(tmp_path / "plan.tsv"), "--batch", batch_ids(tmp_path / "plan.tsv")[0], "--record", json.dumps(rec),
         "--tracker", '{"kind": "pd"}', "--backend", '{"name": "mujoco"}', "--character", "builtin:humanoid",
         "--seed", "0", "--threads", "1", "--out-dir", str(tmp_path / "record")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary, env=env)
    os.close(secondary)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the job closed its end
            break
        if not chunk:
            break
        terminal += chunk
    assert job.wait(timeout=120) == 0, terminal.decode(errors="replace")[-2000:]
    shown = terminal.decode(errors="replace")
    assert re.search(r"pass 1/6: .*\d+/\d+ \[", shown) and "motion-s/s" in shown and "\r" in shown, shown[-2000:]
    log = (tmp_path / "record.log").read_text()
    assert "pass 1/6 (start 0%, 0/1 motions recorded before it): 1/1 done, 0 succeeded" in log
    assert "\r" not in log and "ok," not in log


def test_terrain_mesh_off_leaves_the_mesh_out_of_terrain_pkl(tmp_path):
    """record.terrain_mesh: false writes the batch's terrain.pkl with its heightfield and
    offsets but no mesh (half the file for a GPU batch of PARC terrains)."""
    import pickle

    from physrec import config
    from physrec.demo import write_demo
    from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
    from physrec.stages.index import index_dataset, read_manifest, write_manifest
    from physrec.stages.record import run_record
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "d"}],
                           "record": {"terrain_mesh": False, "start_fractions": []}})
    write_manifest(tmp_path / "manifest.tsv", index_dataset(write_demo(tmp_path / "data")))
    write_plan(tmp_path / "plan.tsv", make_plan(read_manifest(tmp_path / "manifest.tsv"), 16))
    batch = batch_ids(tmp_path / "plan.tsv")[0]
    run_record(tmp_path / "plan.tsv", batch, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, "builtin:humanoid",
               0, 1, tmp_path / "record", ["physrec", "record"], progress=lambda s: None)
    outer = pickle.loads((tmp_path / "record" / "terrain.pkl").read_bytes())
    misc = pickle.loads(outer["misc_data"])
    assert "all_terrain_verts" not in misc and "all_terrain_tris" not in misc
    assert misc["motion_offsets"].shape[1:] == (1, 2) and pickle.loads(outer["terrain_data"])["hf"].ndim == 2
