"""The simulator backends: per-environment terrain, and what the recorder may rely on."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest

from physrec import config
from physrec.formats.motion_file import read_motion_file
from physrec.motion.terrain import height_at, solid_boxes
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.plan import motion_boxes
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BACKENDS, BackendError, BackendOutOfMemory, BackendSpec, make_backend
from physrec.sim.mujoco import MujocoBackend
from physrec.sim.world import PhysicsSettings, pad_boxes, world_mjcf
from physrec.trackers.pd import PDTracker

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "parc_samples"


def _standing(ch, batch):
    """Each motion's first frame as a state, its DOF as PD targets held for 30 control steps."""
    m = [b.motion for b in batch]
    qpos = np.stack([ch.pose_to_qpos(x.root_pos[:1], x.root_rot[:1], x.joint_rot[:1])[0] for x in m])
    dof = np.stack([ch.joint_rot_to_dof(x.joint_rot[:1])[0] for x in m])
    return qpos, np.zeros((len(m), ch.nv)), np.repeat(dof[:, None], 30, axis=1)


def _compiled_world(ch, boxes: np.ndarray, settings: PhysicsSettings) -> mujoco.MjModel:
    """The world compiled by MuJoCo with these boxes in its XML (what set_terrain must equal)."""
    root = ET.fromstring(world_mjcf(ch, len(boxes), settings))
    for g, b in zip(root.find("worldbody").findall("geom"), boxes):
        g.set("pos", " ".join(repr(float(v)) for v in b[:3]))
        g.set("size", " ".join(repr(float(v)) for v in b[3:]))
    m = mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
    m.geom_friction[:, 0] = settings.friction
    return m


def test_terrain_set_per_environment_simulates_as_the_compiled_terrain(ch, demo_batch):
    """set_terrain writes geom fields and the world body's bounding volumes into a compiled
    copy; stepping it must find the same contacts and motion as MuJoCo compiling those boxes."""
    settings = PhysicsSettings()
    padded = pad_boxes([motion_boxes(m, 3.0) for m in demo_batch])
    qpos, qvel, targets = _standing(ch, demo_batch)
    sim = make_backend(BackendSpec(), ch, settings, len(demo_batch), padded.shape[1])
    sim.set_terrain(np.arange(len(demo_batch)), padded)
    sim.reset(np.arange(len(demo_batch)), qpos, qvel)
    out = sim.step(np.arange(len(demo_batch)), targets)
    for e in range(len(demo_batch)):
        m = _compiled_world(ch, padded[e], settings)
        d = mujoco.MjData(m)
        d.qpos[:] = qpos[e]
        sub = settings.substeps
        for k in range(targets.shape[1]):
            d.ctrl[:] = targets[e, k]
            mujoco.mj_step(m, d, nstep=sub)
            np.testing.assert_allclose(d.qpos, out.qpos[e, k], rtol=0, atol=1e-9)
            assert np.array_equal(d.sensordata[-ch.num_bodies:] > 0, out.contacts[e, k])
    assert out.contacts[:, -1].any(axis=1).all()  # every character stands on its terrain
    sim.close()


def test_a_reset_without_contacts_sets_the_same_state(ch, demo_batch):
    """The search's reset (no forward pass, no contacts) leaves the state the recorder's
    reset does, so the steps after it are the same bit for bit."""
    padded = pad_boxes([motion_boxes(m, 3.0) for m in demo_batch])
    qpos, qvel, targets = _standing(ch, demo_batch)
    qvel = np.random.default_rng(0).normal(0.0, 0.3, qvel.shape)
    env = np.arange(len(demo_batch))
    out = []
    for contacts in (True, False):
        with MujocoBackend(BackendSpec(), ch, PhysicsSettings(), len(env), padded.shape[1]) as sim:
            sim.set_terrain(env, padded)
            sim.step(env, targets[:, :2])  # a state from earlier steps, which the reset replaces
            found = sim.reset(env, qpos, qvel, contacts=contacts)
            assert (found is None) == (not contacts)
            out.append((sim.states.copy(), sim.step(env, targets[:, :5])))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    for a, b in zip(vars(out[0][1]).values(), vars(out[1][1]).values()):
        np.testing.assert_array_equal(a, b)


def test_a_motion_records_the_same_alone_or_in_any_batch(ch, demo_batch):
    """Each environment simulates only its own terrain in its own frame: its attempts do not
    depend on the other motions of its batch, nor on where its tile lies in the output world."""
    alone = record_batch(demo_batch[3:4], ch, PDTracker(), RecordSettings())
    batch = record_batch(demo_batch + demo_batch[3:4], ch, PDTracker(), RecordSettings())
    for rec, motion in ((batch, 3), (batch, len(demo_batch))):
        mine = [a for a in rec.attempts if a.motion == motion]
        assert len(mine) == len(alone.attempts)
        for a, b in zip(mine, alone.attempts):
            assert (a.steps, a.success, a.fail_reason) == (b.steps, b.success, b.fail_reason)
            local = a.qpos.copy()
            local[:, :2] -= rec.tiled.offsets[motion]
            ref = b.qpos.copy()
            ref[:, :2] -= alone.tiled.offsets[0]
            np.testing.assert_allclose(local, ref, rtol=0, atol=1e-12)
            assert np.array_equal(a.actions, b.actions) and np.array_equal(a.contacts, b.contacts)


def test_an_environment_has_only_its_own_terrain(ch, demo_batch):
    boxes = [motion_boxes(m, 3.0) for m in demo_batch]
    padded = pad_boxes(boxes)
    assert padded.shape == (len(demo_batch), max(len(b) for b in boxes), 6)
    for b, p in zip(boxes, padded):
        np.testing.assert_array_equal(p[:len(b)], b)
        # Parked slots lie inside the first box, 1 cm above its bottom: no body can reach them.
        first = b[0]
        for q in p[len(b):]:
            assert np.all(np.abs(q[:2] - first[:2]) + q[3:5] <= first[3:5])
            assert q[2] - q[5] >= first[2] - first[5] - 1e-12 and q[2] + q[5] < first[2] + first[5] - 0.5


@pytest.mark.skipif(not SHARED.is_dir(), reason="PARC samples (../shared/parc_samples) not present")
def test_parc_terrain_is_cropped_to_where_the_character_can_reach():
    mf = read_motion_file(SHARED / "TEASER_TERRAIN.pkl")
    m = BatchMotion("teaser", mf.motion, mf.terrain)
    full = solid_boxes(mf.terrain)
    crop = motion_boxes(m, 3.0)
    assert len(crop) < len(full) / 5, (len(crop), len(full))
    # Every point within the margin of the reference root path is covered at its true height.
    path = mf.motion.root_pos[:, :2].astype(np.float64)
    rng = np.random.default_rng(0)
    pts = path[rng.integers(len(path), size=2000)] + rng.uniform(-2.9, 2.9, size=(2000, 2))
    tops = np.full(len(pts), -np.inf)
    for b in crop:
        inside = np.all(np.abs(pts - b[:2]) <= b[3:5] + 1e-6, axis=1)
        tops[inside] = np.maximum(tops[inside], b[2] + b[5])
    np.testing.assert_allclose(tops, height_at(mf.terrain, pts), rtol=0, atol=1e-5)


def test_a_margin_the_character_could_reach_past_is_refused(ch):
    rec = config.validate({"iterations": [{"name": "i", "dataset": "x"}], "record": {"terrain_margin_m": 1.2}})["record"]
    with pytest.raises(config.ConfigError, match=r"terrain_margin_m \(1.2\) is less than .*reach \(1.56 m\)"):
        config.check_record_settings(rec, ch, "config")


def test_an_unknown_backend_is_named(ch):
    with pytest.raises(BackendError, match="unknown backend 'bullet'; known: mujoco, mujoco_warp"):
        make_backend(BackendSpec(name="bullet"), ch, PhysicsSettings(), 1, 1)


def test_each_gpu_job_claims_a_device_of_its_own(tmp_path):
    from physrec.sim.devices import claim
    ids = ["0000:01:00.0", "0000:41:00.0"]
    first, h1 = claim(ids, folder=tmp_path)
    second, h2 = claim(ids, folder=tmp_path)
    assert (first, second) == (0, 1)
    h1.close()  # the first job ended: its device is free again
    third, h3 = claim(ids, folder=tmp_path)
    assert third == 0
    h2.close(); h3.close()


def test_a_job_that_waits_for_a_gpu_names_its_holder_and_gives_up(tmp_path):
    from physrec.sim.devices import DeviceBusyError, claim
    _, held = claim(["0000:01:00.0"], folder=tmp_path)
    said = []
    with pytest.raises(DeviceBusyError, match=r"no GPU became free in 0.2 s \(PHYSREC_GPU_WAIT_S\); held by: "
                                              rf"0000:01:00.0: pid {os.getpid()} of user"):
        claim(["0000:01:00.0"], say=said.append, poll_s=0.05, folder=tmp_path, wait_s=0.2)
    assert f"pid {os.getpid()}" in said[0] and "waiting up to 0.2 s" in said[0]
    held.close()


def test_the_gpu_locks_can_be_shared_by_several_users(tmp_path):
    """Another user's job must be able to add a lock to the folder and open an existing lock
    (flock needs the file open): the folder is made like /tmp (1777) and every lock file 0666,
    whatever the umask."""
    import stat
    from physrec.sim.devices import claim
    folder = tmp_path / "locks"
    old = os.umask(0o022)
    try:
        _, held = claim(["0000:01:00.0"], folder=folder)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
    assert stat.S_IMODE((folder / "0000_01_00.0.lock").stat().st_mode) == 0o666
    held.close()


class SmallDevice(MujocoBackend):
    """The CPU backend on a 'device' that holds 2 environments but claims to hold 4: the
    recorder chunks to its capacity, and halves a chunk that runs out of memory."""

    created: list[int] = []
    fits = 2

    def __init__(self, spec, character, settings, num_envs, terrain_slots):
        SmallDevice.created.append(num_envs)
        if num_envs > SmallDevice.fits:
            raise BackendOutOfMemory(f"out of device memory for {num_envs} worlds")
        super().__init__(spec, character, settings, num_envs, terrain_slots)


def capacity(spec, character, settings, terrain_slots):
    return CAPACITY["size"]


CAPACITY = {"size": 4}


@pytest.mark.parametrize("size", [4, 3, 1])
def test_a_batch_larger_than_the_device_is_recorded_in_chunks_with_the_same_result(ch, demo_batch, monkeypatch, size):
    """Chunks of 1, 3 and 4 (4 runs out of memory and is halved): the same attempts in the same
    order as the whole batch, so traj_<i> ids and file bytes never depend on the device's memory."""
    monkeypatch.setitem(BACKENDS, "small", f"{__name__}:SmallDevice")
    monkeypatch.setitem(CAPACITY, "size", size)
    whole = record_batch(demo_batch, ch, PDTracker(), RecordSettings())
    said = []
    SmallDevice.created.clear()
    SmallDevice.fits = 2 if size == 4 else size
    chunked = record_batch(demo_batch, ch, PDTracker(), RecordSettings(), BackendSpec(name="small"), said.append)
    if size == 4:
        # 6 motions: 4 (too many), then 2 + 2, then the last two; later passes never try 4 again
        assert SmallDevice.created[:4] == [4, 2, 2, 2] and max(SmallDevice.created[1:]) == 2
        assert any("taking these motions again in halves" in s for s in said)
    assert len(whole.attempts) > len(demo_batch)  # later starts too: the order spans passes
    for a, b in zip(whole.attempts, chunked.attempts, strict=True):
        assert (a.motion, a.start_fraction, a.steps, a.fail_reason) == (b.motion, b.start_fraction, b.steps, b.fail_reason)
        assert np.array_equal(a.qpos, b.qpos) and np.array_equal(a.actions, b.actions)


def test_concurrent_jobs_claim_different_gpus(tmp_path):
    """Two record jobs started at once on a 2-GPU machine (`--resources gpu=2`) take one GPU each."""
    import subprocess
    import sys
    code = ("import sys, time; from pathlib import Path; from physrec.sim.devices import claim; "
            "i, lock = claim(['0000:01:00.0', '0000:41:00.0'], folder=Path(sys.argv[1])); "
            "print(i, flush=True); time.sleep(2)")
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    got = sorted(int(p.communicate(timeout=60)[0]) for p in jobs)
    assert got == [0, 1]


def _backends() -> list:
    specs = [pytest.param(BackendSpec(), id="mujoco")]
    try:
        import mujoco_warp  # noqa: F401
        specs.append(pytest.param(BackendSpec(name="mujoco_warp", device="cpu", deterministic=True), id="mujoco_warp"))
    except ImportError:
        pass
    return specs


@pytest.mark.parametrize("spec", _backends())
def test_a_diverged_state_terminates_as_non_finite_state_on_every_backend(ch, demo_batch, spec, tmp_path,
                                                                          monkeypatch):
    """A velocity no simulation survives: MuJoCo's mj_step resets such a state to the initial
    pose (a silent root_position failure before), MuJoCo Warp keeps the NaN; both report it the
    same way, and the healthy environment beside it steps on."""
    from physrec.motion import termination
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to MUJOCO_LOG.TXT in the working directory
    settings = PhysicsSettings()
    batch = demo_batch[:1] * 2
    padded = pad_boxes([motion_boxes(m, 3.0) for m in batch])
    qpos, qvel, targets = _standing(ch, batch)
    qvel[1, :3] = 1e12  # huge: mj_step's check flags it
    sim = make_backend(spec, ch, settings, 2, padded.shape[1])
    try:
        sim.set_terrain(np.arange(2), padded)
        sim.reset(np.arange(2), qpos, qvel)
        out = sim.step(np.arange(2), targets[:, :4])
    finally:
        sim.close()
    assert np.isfinite(out.qpos[0]).all()
    assert not np.isfinite(out.qpos[1]).all(axis=-1).any(), "a diverged environment still reports a state"
    root_pos, root_rot, joint_rot = ch.qpos_to_pose(out.qpos[:, -1])
    body = ch.body_positions(root_pos, root_rot, joint_rot)
    chk = termination.check(body, root_rot, body[[0, 0]], root_rot[[0, 0]], termination.TerminationSettings())
    assert chk.code.tolist() == [termination.OK, termination.NON_FINITE_STATE]
    assert termination.reason(int(chk.code[1]), -1, ch.body_names) == "non_finite_state"
