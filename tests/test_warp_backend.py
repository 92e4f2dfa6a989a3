"""MuJoCo Warp backend against the CPU backend, on Warp's CPU device.

The first run compiles MuJoCo Warp's kernels (about 35 s on 2 cores; Warp caches them in
~/.cache/warp/<warp version>/, or under WARP_CACHE_PATH); later runs take about 5 s.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco_warp", reason="the mujoco_warp backend needs MuJoCo Warp: pip install -e '.[gpu]'")

from physrec import demo
from physrec.motion.character import Character
from physrec.motion.terrain import Heightfield, height_at, heightfield_boxes
from physrec.sim import mujoco_warp
from physrec.sim.backend import BackendError, BackendSpec, backend_capacity, make_backend
from physrec.sim.mujoco import MujocoBackend
from physrec.sim.mujoco_warp import LimitExceeded, WarpBackend
from physrec.sim.world import PhysicsSettings, pad_boxes

SETTINGS = PhysicsSettings()
STEPS = 30  # 1 s at 30 Hz
# Float32 against float64 (and MuJoCo Warp's own solver): measured 7.3e-5 m after 1 s of
# standing and 1.1e-4 m after a 0.2 m drop onto the floor; contact flags agreed on every step.
ROOT_ATOL = 1e-3
WARP = BackendSpec(name="mujoco_warp", device="cpu")


@pytest.fixture(scope="module")
def ch() -> Character:
    return Character.load("builtin:humanoid")


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
    assert prov["backend"] == "mujoco_warp" and prov["device"] == "CPU"
    assert {"mujoco_version", "mujoco_warp_version", "warp_version", "nconmax", "njmax"} <= set(prov)


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
