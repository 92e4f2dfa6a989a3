"""The sampling search's feed-forward: inverse dynamics' joint torques along the reference."""

import numpy as np
import pytest

from physrec import config
from physrec.demo import demo_motions
from physrec.recording.data import BatchMotion
from physrec.recording.plan import batch_boxes, build_reference
from physrec.recording.settings import RecordSettings
from physrec.trackers import feedforward


@pytest.fixture(scope="module")
def stand(ch):
    demo = demo_motions()
    m = BatchMotion("stand_flat", demo["stand_flat"].motion, demo["stand_flat"].terrain)
    ref = build_reference(ch, [m])
    boxes = batch_boxes([m], RecordSettings().terrain_margin)[0]
    dt = 1.0 / 30.0
    times = np.arange(30) * dt
    return ref, boxes, dt, times, np.zeros(len(times), dtype=np.int64)


def test_the_ground_carries_the_root_and_the_legs_carry_the_weight(ch, stand):
    """Standing: the root's forces are supplied by the feet's ground forces (none is left for
    an external force to supply), and the knees and hips then hold the body's weight, which
    the contact-free variant leaves to nothing."""
    ref, boxes, dt, times, motion = stand
    model = feedforward.world_model(ch, boxes, dt, 4)
    qpos, qvel, qacc = feedforward.reference_dynamics(ref, ch, motion, times, dt)
    weight = float(model.body_mass.sum()) * 9.81
    import mujoco
    d = mujoco.MjData(model)
    jac = np.zeros((3, model.nv))
    flags, margin = int(model.opt.disableflags), model.geom_margin.copy()
    nterrain = int(np.sum(model.geom_bodyid == 0))
    model.opt.disableflags = flags | int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    d.qpos[:], d.qvel[:], d.qacc[:] = qpos[10], qvel[10], qacc[10]
    mujoco.mj_inverse(model, d)
    tau = d.qfrc_inverse.copy()
    ground = feedforward._ground_forces(model, d, tau[:6], jac, flags, nterrain, margin)
    model.opt.disableflags = flags
    assert abs(tau[2]) > 0.9 * weight  # without the ground, the root needs the weight from outside
    assert np.linalg.norm(tau[:3] - ground[:3]) < 0.01 * weight  # the feet carry it
    legs = [ch.dof_slices[ch.body_names.index(b) - 1].start for b in ("right_shin", "left_shin")]
    on_ground = feedforward.joint_torques(model, ch, qpos, qvel, qacc, "inverse")
    free = feedforward.joint_torques(model, ch, qpos, qvel, qacc, "inverse_free")
    assert np.abs(on_ground[:, legs]).mean() > 5 * np.abs(free[:, legs]).mean()
    offsets = feedforward.target_offsets("inverse", model, ch, ref, motion, times, dt)
    assert offsets.shape == (len(times), ch.num_dof) and np.isfinite(offsets).all()
    assert np.allclose(offsets, on_ground / ch.kp)


def test_the_defaults_search_everything_with_the_feedforward():
    full = config.tracker_spec({"kind": "sampling"})
    assert full["pd_first"] is False and full["feedforward"] == "inverse"
    assert full["search_passes"] == 1 and full["refine_passes"] == 1
    assert full["velocity_step"] == "current" and full["target_lead"] == 0.5
