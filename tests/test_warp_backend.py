"""MuJoCo Warp backend against the CPU backend, on Warp's CPU device.

The first run compiles MuJoCo Warp's kernels (about 35 s on 2 cores; Warp caches them in
~/.cache/warp/<warp version>/, or under WARP_CACHE_PATH); later runs take about 5 s.
On a GPU machine, PHYSREC_TEST_WARP_DEVICE=cuda:0 runs the same checks on that device.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("mujoco_warp", reason="the mujoco_warp backend needs MuJoCo Warp: pip install -e '.[gpu]'")

from physrec import demo
from physrec.motion.terrain import Heightfield, height_at, heightfield_boxes
from physrec.sim import mujoco_warp
from physrec.sim.backend import BackendError, BackendSpec, backend_capacity, make_backend, tensor_device
from physrec.sim.mujoco import MujocoBackend
from physrec.sim.mujoco_warp import LimitExceeded, WarpBackend
from physrec.sim.world import PhysicsSettings, pad_boxes

SETTINGS = PhysicsSettings()
STEPS = 30  # 1 s at 30 Hz
# Float32 against float64 (and MuJoCo Warp's own solver): measured 7.3e-5 m after 1 s of
# standing and 1.1e-4 m after a 0.2 m drop onto the floor; contact flags agreed on every step.
ROOT_ATOL = 1e-3
# Deterministic: on a GPU, tests that compare two Warp runs (graph against plain launches, one
# batch against its halves) need MuJoCo Warp's fixed contact order. Warp's CPU device runs in
# order either way.
WARP = BackendSpec(name="mujoco_warp", device=os.environ.get("PHYSREC_TEST_WARP_DEVICE", "cpu"), deterministic=True)


def device_name() -> str:
    """Warp's name of the tested device, as provenance records it ("CPU", "NVIDIA H200")."""
    return mujoco_warp.wp.get_device(WARP.device).name


@pytest.fixture(scope="module")
def scene(ch):
    """Four environments on different terrains: standing on flat ground, on top of a step
    (feet 1.4 mm into it, so in contact at reset), on the ramp's stairs, and dropped 0.2 m
    onto a lower floor. Returns (boxes, qpos, qvel, targets [n, STEPS, nu])."""
    flat, step, ramp = demo.flat_terrain(), demo.step_terrain(), demo.ramp_terrain()
    low = Heightfield(hf=flat.hf - 0.25, min_point=flat.min_point, dx=flat.dx)
    terrains = [flat, step, ramp, low]
    boxes = pad_boxes([heightfield_boxes(t, float(t.hf.min()) - 1.0) for t in terrains])
    xy = np.array([[0.0, 0.0], [1.6, 0.0], [0.4, 0.0], [0.0, 0.0]])
    z = np.array([height_at(t, p) for t, p in zip(terrains, xy)]) + demo.STAND_HEIGHT
    z[1] -= 0.005
    z[3] += 0.2
    root_rot, joint_rot = demo._pose(len(terrains))
    qpos = ch.pose_to_qpos(np.c_[xy, z], root_rot, joint_rot)
    dof = ch.clip_action(ch.joint_rot_to_dof(joint_rot))
    return boxes, qpos, np.zeros((len(terrains), ch.nv)), np.repeat(dof[:, None], STEPS, axis=1)


@pytest.fixture(scope="module")
def warp(ch, scene):
    boxes = scene[0]
    with make_backend(WARP, ch, SETTINGS, len(boxes), boxes.shape[1]) as sim:
        sim.set_terrain(np.arange(len(boxes)), boxes)
        yield sim


def _run(sim, scene):
    """Reset every environment to its start and hold the PD targets for STEPS control steps."""
    _, qpos, qvel, targets = scene
    env = np.arange(len(qpos))
    return sim.reset(env, qpos, qvel), sim.step(env, targets)


def test_warp_agrees_with_mujoco(ch, scene, warp):
    boxes = scene[0]
    with MujocoBackend(BackendSpec(), ch, SETTINGS, len(boxes), boxes.shape[1]) as cpu:
        cpu.set_terrain(np.arange(len(boxes)), boxes)
        c_reset, c_out = _run(cpu, scene)
    w_reset, w_out = _run(warp, scene)
    assert w_out.qpos.dtype == np.float64 and w_out.qpos.shape == c_out.qpos.shape
    assert w_out.contacts.dtype == bool and w_out.contacts.shape == c_out.contacts.shape
    np.testing.assert_array_equal(w_reset, c_reset)
    assert w_reset[1].any() and not w_reset[0].any()
    np.testing.assert_allclose(w_out.qpos[..., :3], c_out.qpos[..., :3], rtol=0, atol=ROOT_ATOL)
    np.testing.assert_allclose(w_out.qpos[..., 3:7], c_out.qpos[..., 3:7], rtol=0, atol=10 * ROOT_ATOL)
    assert (w_out.contacts == c_out.contacts).mean() >= 0.98
    assert w_out.contacts[:, -1].any(axis=1).all()  # every character stands on its own terrain
    assert w_out.qpos[3, -1, 2] < scene[1][3, 2] - 0.15  # the dropped one landed on its own, lower floor


def test_environments_outside_a_step_keep_their_state(scene, warp):
    """Stepping some worlds holds the others: stepped later, they continue as if stepped alone."""
    _, together = _run(warp, scene)
    _, qpos, qvel, targets = scene
    warp.reset(np.arange(len(qpos)), qpos, qvel)
    assert warp.step(np.array([], dtype=int), targets[:0]).qpos.shape == (0, STEPS, qpos.shape[1])
    first = warp.step(np.array([0, 2]), targets[[0, 2]])
    later = warp.step(np.array([3, 1]), targets[[3, 1]])
    np.testing.assert_allclose(first.qpos, together.qpos[[0, 2]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(later.qpos, together.qpos[[3, 1]], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(later.contacts, together.contacts[[3, 1]])


def test_a_reset_without_contacts_steps_the_same(scene, warp):
    """The search's reset skips the forward pass: the steps after it are the same bit for bit."""
    _, qpos, qvel, targets = scene
    env = np.arange(len(qpos))
    moving = np.random.default_rng(0).normal(0.0, 0.3, qvel.shape)
    out = []
    for contacts in (True, False):
        warp.step(env, targets[:, :2])  # a state from earlier steps, which the reset replaces
        assert (warp.reset(env, qpos, moving, contacts=contacts) is None) == (not contacts)
        out.append(warp.step(env, targets[:, :5]))
    for a, b in zip(vars(out[0]).values(), vars(out[1]).values()):
        np.testing.assert_array_equal(a, b)


def test_graph_replay_matches_plain_launches(ch, scene, warp):
    boxes = scene[0]
    with WarpBackend(WARP, ch, SETTINGS, len(boxes), boxes.shape[1], graph=False) as plain:
        plain.set_terrain(np.arange(len(boxes)), boxes)
        _, ref = _run(plain, scene)
    _, out = _run(warp, scene)
    np.testing.assert_allclose(out.qpos, ref.qpos, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out.contacts, ref.contacts)


@pytest.mark.parametrize("limits, name", [({"njmax": 8}, "njmax"), ({"nconmax": 1}, "nconmax")])
def test_an_overflow_names_the_limit(ch, scene, limits, name):
    boxes = scene[0]
    with WarpBackend(WARP, ch, SETTINGS, len(boxes), boxes.shape[1], **limits) as sim:
        sim.set_terrain(np.arange(len(boxes)), boxes)
        with pytest.raises(LimitExceeded, match=f"raise {name}") as err:
            _run(sim, scene)
    assert name in err.value.limits and len(err.value.envs)


def test_memory_provenance_and_capacity(ch, scene, warp):
    mem = warp.memory()
    assert backend_capacity(WARP, ch, SETTINGS, warp.terrain_slots) >= 1000  # ~100 kB each
    assert 0 < mem["per_env"] * warp.num_envs < mem["device"]
    prov = warp.provenance()
    assert prov["backend"] == "mujoco_warp" and prov["device"] == device_name()
    assert {"mujoco_version", "mujoco_warp_version", "warp_version", "nconmax", "njmax"} <= set(prov)
    assert prov["deterministic"] and warp.model.opt.deterministic == int(mujoco_warp.mjw.DeterminismType.ALL)


def test_a_missing_device_is_named(ch):
    with pytest.raises(BackendError, match=r"no device 'cuda:99'.*devices here: cpu"):
        WarpBackend(BackendSpec(name="mujoco_warp", device="cuda:99"), ch, SETTINGS, 1, 1)


def test_missing_packages_say_what_to_install(ch, monkeypatch):
    monkeypatch.setattr(mujoco_warp, "_IMPORT_ERROR", ImportError("No module named 'mujoco_warp'"))
    with pytest.raises(BackendError, match=r'pip install -e "\.\[gpu\]"'):
        make_backend(WARP, ch, SETTINGS, 1, 1)


def test_a_wrongly_shaped_input_is_refused(scene, warp):
    targets = scene[3]
    with pytest.raises(ValueError, match="targets has shape"):
        warp.step(np.arange(2), targets[:, :, :5])


def test_a_graph_launch_out_of_memory_is_the_backends_out_of_memory(scene, warp, monkeypatch):
    """On CUDA a captured graph allocates its temporaries at its first launch; failing there
    must reach the recorder as BackendOutOfMemory (it halves the chunk), in step_tensors too."""
    import torch
    from physrec.sim.backend import BackendOutOfMemory

    def fail(*args):
        raise RuntimeError("Graph launch error: CUDA error 2: out of memory")
    monkeypatch.setattr(warp, "_launch_steps", fail)
    n = len(scene[1])
    with pytest.raises(BackendOutOfMemory, match="environments do not fit"):
        warp.step(np.arange(n), scene[3][:, :1])
    with pytest.raises(BackendOutOfMemory, match="environments do not fit"):
        warp.step_tensors(torch.arange(n, dtype=torch.int32, device=warp.tensor_device),
                          torch.as_tensor(scene[3][:, :1], dtype=torch.float32, device=warp.tensor_device))


# -- the recorder on both backends -----------------------------------------------------------------
# Root trajectories over the first second of every attempt. Float32 (Warp) against float64
# (MuJoCo) and MuJoCo Warp's own solver kernels: measured 7e-5 m for the standing motions;
# motions that fail diverge once the character loses balance (chaotic contact), up to
# 1.3e-2 m within their first second. The bound is for the worst attempt of the demo.
RECORDED_ROOT_ATOL = 0.03


@pytest.fixture(scope="module")
def quick_falls(demo_batch):
    """The demo less climb_step: under pd its attempts keep their balance for 2-2.8 s before
    they fall, long enough for float32 to decide the step of the fall (measured 2026-12-07:
    from 20 %, step 62 on the CPU and 59 on Warp; Warp alone, 73 or 74 steps from 10 %
    depending on how the batch is chunked). The other motions fall within about a second."""
    return [b for b in demo_batch if b.name != "climb_step"]


@pytest.fixture(scope="module")
def both(ch, quick_falls):
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.pd import PDTracker
    return (record_batch(quick_falls, ch, PDTracker(), RecordSettings()),
            record_batch(quick_falls, ch, PDTracker(), RecordSettings(), WARP))


def _exceeded(attempt, settings) -> set[str]:
    """Limits exceeded in the last 3 control steps of an attempt (errors: termination.ERROR_COLUMNS)."""
    e = attempt.errors[-3:]
    out = {"root_position"} if (e[:, 0] > settings.root_pos_error).any() else set()
    out |= {"root_rotation"} if (e[:, 1] > settings.root_rot_error).any() else set()
    return out | ({"body_offset"} if (e[:, 2] > 1.0).any() else set())


def _ends_alike(a, b, settings) -> bool:
    """Both succeed; or both terminate within 2 control steps of each other, with the limit
    that ended one of them exceeded in both (a fall crosses two limits in the same step,
    and float32 decides which the recorder names first)."""
    if a.success or b.success:
        return a.success == b.success
    named = {r.split(":")[0] for r in (a.fail_reason, b.fail_reason)}
    return abs(a.steps - b.steps) <= 2 and bool(named & _exceeded(a, settings) & _exceeded(b, settings))


def test_the_recorder_ends_every_attempt_alike_on_both_backends(both):
    from physrec.motion.termination import TerminationSettings
    cpu, gpu = both
    assert gpu.provenance["backend"] == "mujoco_warp" and cpu.provenance["backend"] == "mujoco"
    assert [(a.motion, a.start_fraction) for a in cpu.attempts] == [(a.motion, a.start_fraction) for a in gpu.attempts]
    for a, b in zip(cpu.attempts, gpu.attempts):
        assert _ends_alike(a, b, TerminationSettings()), (a.motion, a.start_fraction, a.fail_reason, b.fail_reason,
                                                          a.steps, b.steps)
        second = min(a.steps, b.steps, STEPS) + 1
        np.testing.assert_allclose(a.qpos[:second, :3], b.qpos[:second, :3], rtol=0, atol=RECORDED_ROOT_ATOL)


def test_warp_recordings_are_written_in_the_batch_world_as_on_the_cpu(both):
    cpu, gpu = both
    np.testing.assert_array_equal(cpu.tiled.offsets, gpu.tiled.offsets)
    for a, b in zip(cpu.attempts, gpu.attempts):
        np.testing.assert_allclose(a.qpos[0], b.qpos[0], rtol=0, atol=1e-6)  # the reset frame: float32 only


def test_a_policy_tracks_alike_on_both_backends(ch, demo_batch, tmp_path):
    """A learned tracker on the Warp backend: observation and policy in torch on the
    backend's tensor device, fed from Warp's states."""
    import torch
    from first_target_policy import FirstTargetFrame
    from physrec.motion.termination import TerminationSettings
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.base import make_tracker
    path = tmp_path / "policy.pt2"
    torch.export.save(torch.export.export(FirstTargetFrame(ch), (torch.zeros(2, 1312),),
                                          dynamic_shapes=({0: torch.export.Dim("n")},)), path)
    spec = {"kind": "exported", "model": str(path), "observation": "parc"}
    settings = RecordSettings(start_fractions=())
    cpu = record_batch(demo_batch, ch, make_tracker(spec, ch), settings)
    gpu = record_batch(demo_batch, ch, make_tracker(spec, ch, tensor_device(WARP)), settings, WARP)
    for a, b in zip(cpu.attempts, gpu.attempts, strict=True):
        assert _ends_alike(a, b, TerminationSettings()), (a.motion, a.fail_reason, b.fail_reason)
        assert b.obs.shape == a.obs.shape
        np.testing.assert_allclose(a.obs[0], b.obs[0], rtol=0, atol=1e-4)  # the reset frame's observation


def test_an_overflowing_batch_is_recorded_again_with_larger_limits(ch, demo_batch, both, monkeypatch):
    """Never recorded from an overflowed buffer: with 8 constraint rows per world (standing
    needs about 36) the recorder doubles the limits until the batch fits, and records what
    the default limits record."""
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.pd import PDTracker
    monkeypatch.setattr(mujoco_warp, "NJMAX", 8)
    said = []
    rec = record_batch(demo_batch[:2], ch, PDTracker(), RecordSettings(), WARP, said.append)
    assert [s for s in said if "again with" in s][-1].endswith("with 8x the limits")
    assert rec.provenance["njmax"] == 64
    default = both[1]
    for a, b in zip([a for a in default.attempts if a.motion < 2], rec.attempts, strict=True):
        assert (a.motion, a.steps, a.success) == (b.motion, b.steps, b.success)
        local = [x.qpos - np.r_[r.tiled.offsets[x.motion], np.zeros(x.qpos.shape[1] - 2)]
                 for x, r in ((a, default), (b, rec))]  # each batch has its own tiled world
        np.testing.assert_allclose(local[0], local[1], rtol=0, atol=1e-3)


def test_recording_buffers_that_do_not_fit_the_gpu_are_taken_in_halves(ch, quick_falls, both, monkeypatch):
    """torch running out of device memory for a pass's buffers (a GPU smaller than the
    batch's observations) halves the chunk like the backend's own out-of-memory, and the
    motions record as they do in one batch."""
    import torch
    from physrec.recording import device_pass
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.pd import PDTracker
    zeros = torch.zeros

    def small_device(shape, **kwargs):
        if len(shape) == 3 and shape[0] > 2:  # [n, K + 1, ...] buffers of more than 2 environments
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 5.00 GiB")
        return zeros(shape, **kwargs)
    monkeypatch.setattr(device_pass.torch, "zeros", small_device)
    said = []
    rec = record_batch(quick_falls, ch, PDTracker(), RecordSettings(), WARP, said.append)
    assert any("recording buffers of" in s and "taking these motions again in halves" in s for s in said)
    key = lambda a: (a.motion, a.start_fraction)  # noqa: E731 - chunks change the order, not the attempts
    for a, b in zip(sorted(both[1].attempts, key=key), sorted(rec.attempts, key=key), strict=True):
        assert (a.motion, a.start_fraction, a.steps, a.success) == (b.motion, b.start_fraction, b.steps, b.success)


def test_a_batch_cut_into_device_chunks_streams_rollouts_with_the_same_bytes(ch, quick_falls, both, monkeypatch,
                                                                            tmp_path):
    """A device that holds 2 environments: rollouts.h5 is written chunk by chunk, pass after
    pass, as the job's writer gets them, with the bytes of the same recording written at once.
    (MuJoCo Warp's float32 states depend on a world's neighbours in the last bits, about 1e-6 m
    between chunks of 2 and the whole batch, measured 2026-12-07 on Warp's CPU device: the
    comparison is between two runs chunked alike.)"""
    from physrec.formats.rollouts import rollouts_writer, write_h5
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.stages.record import episode
    from physrec.trackers.pd import PDTracker
    monkeypatch.setattr(mujoco_warp, "capacity", lambda *args: 2)
    handed: list[int] = []
    with rollouts_writer(tmp_path / "streamed.h5") as add:
        def write(found):
            handed.append(len(found))
            add([episode(a) for a in found])
        streamed = record_batch(quick_falls, ch, PDTracker(), RecordSettings(), WARP, on_attempts=write)
    whole = record_batch(quick_falls, ch, PDTracker(), RecordSettings(), WARP)
    write_h5(tmp_path / "whole.h5", [episode(a) for a in whole.attempts])
    assert max(handed) == 2 and sum(handed) == len(whole.attempts) == len(both[1].attempts)
    assert all(a.qpos.size == 0 for a in streamed.attempts)  # handed on: the recording keeps no frames
    assert (tmp_path / "streamed.h5").read_bytes() == (tmp_path / "whole.h5").read_bytes()


def test_the_workflow_records_on_the_warp_backend(tmp_path):
    """The demo through Snakemake with backend: mujoco_warp (Warp's CPU device here): the same
    outcomes as the CPU backend's, and the backend named in every recorded file."""
    import json
    from physrec.formats.motion_file import read_motion_file
    from physrec.formats.tables import read_tsv_records
    from snakemake_project import base_config, make_project, snakemake
    runs = {}
    for name, extra in (("cpu", {}), ("warp", {"backend": "mujoco_warp", "device": WARP.device,
                                                "deterministic": True})):
        project = make_project(tmp_path / name, base_config("builtin:demo", **extra))
        snakemake(project)
        runs[name] = project / "results" / "iter0"
    status = {k: {r["name"]: r["status"] for r in read_tsv_records(v / "manifest.tsv")} for k, v in runs.items()}
    assert status["cpu"] == status["warp"]
    record_dir = next((runs["warp"] / "record").iterdir())
    info = json.loads((record_dir / "rollouts.json").read_text())
    env, by = info["env_info"]["env_kwargs"], info["episodes"][0]["recorded_by"]
    assert env["backend"] == by["backend"] == "mujoco_warp"
    assert env["device"] == WARP.device and by["device"] == device_name()
    assert by["deterministic"] is True  # the config key reached MuJoCo Warp
    assert info["commit_info"]["warp_version"] == by["warp_version"] == wp_version()
    recorded = sorted((runs["warp"] / "recorded_motions").glob("*.pkl"))
    assert recorded
    for path in recorded:
        assert read_motion_file(path).misc["physrec:backend"].startswith("mujoco_warp 4.")


def wp_version() -> str:
    import warp
    return warp.__version__


def test_the_control_loop_stays_on_the_device(ch, quick_falls, both, monkeypatch):
    """With mujoco_warp the recorder never asks for host arrays per step (WarpBackend.step):
    it steps through step_tensors and reads the buffers when a pass ends."""
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.pd import PDTracker

    def host_step(*args, **kwargs):
        raise AssertionError("the recorder stepped through the host path")
    monkeypatch.setattr(WarpBackend, "step", host_step)
    calls = []
    original = WarpBackend.step_tensors
    monkeypatch.setattr(WarpBackend, "step_tensors", lambda self, *a: calls.append(1) or original(self, *a))
    rec = record_batch(quick_falls, ch, PDTracker(), RecordSettings(), WARP)
    assert len(calls) >= max(a.steps for a in rec.attempts)
    assert [(a.motion, a.steps, a.fail_reason) for a in rec.attempts] == \
        [(a.motion, a.steps, a.fail_reason) for a in both[1].attempts]


def test_device_cuda_without_a_gpu_says_so(ch):
    if mujoco_warp.wp.get_cuda_device_count():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match="device 'cuda': Warp sees no CUDA device here"):
        make_backend(BackendSpec(name="mujoco_warp", device="cuda"), ch, SETTINGS, 1, 1)


def test_an_overflow_of_a_fixed_limit_fails_at_once(ch, scene, warp):
    """A limit of MuJoCo Warp's own (here the height-field contact limit) cannot be raised: no
    retry with larger buffers, an error that says what to do instead."""
    import mujoco_warp as mjw
    from physrec.sim.backend import BackendError
    warp.data.overflow.fill_(int(mjw.OverflowType.HFIELD))
    with pytest.raises(BackendError, match="is not a limit physrec can raise") as err:
        warp.check_overflow()
    assert not isinstance(err.value, LimitExceeded)
    warp.data.overflow.zero_()


def test_the_device_loop_refuses_a_tracker_it_does_not_know(ch, demo_batch):
    """An open-loop tracker other than pd was run as pd on the device: now it is refused."""
    from physrec.recording.batch import record_batch
    from physrec.recording.settings import RecordSettings
    from physrec.trackers.base import TrackerError

    class Zeros:
        max_horizon = 1

        def describe(self) -> str:
            return "zeros: every PD target 0"

        def act(self, inp):
            return np.zeros((len(inp.env), 1, ch.num_dof))

    with pytest.raises(TrackerError, match="zeros: every PD target 0: the device's control loop runs pd"):
        record_batch(demo_batch[:1], ch, Zeros(), RecordSettings(start_fractions=()), WARP)
