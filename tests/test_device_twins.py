"""The torch twins of the simulator-side conversions and termination check, against numpy.

A control loop on the GPU (recording.device_pass) computes in float32 torch what the CPU
recorder computes in float64 numpy; the two must agree to float32 rounding.
"""

import numpy as np
import torch

from physrec.motion import quat, quat_torch as tq, termination, termination_torch
from physrec.motion.kinematics_torch import TorchKinematics


def _states(ch, n=64, seed=0):
    rng = np.random.default_rng(seed)
    joint_rot = ch.dof_to_joint_rot(rng.uniform(-1.5, 1.5, (n, ch.num_dof)))
    qpos = ch.pose_to_qpos(rng.normal(size=(n, 3)), quat.normalize(rng.normal(size=(n, 4))), joint_rot)
    return qpos, rng.normal(size=(n, ch.nv))


def _same_rotation(a, b, atol):
    """q and -q are one rotation."""
    np.testing.assert_allclose(np.minimum(np.abs(a - b), np.abs(a + b)), 0, atol=atol)


def test_mujoco_state_to_parc_quantities_match_numpy(ch):
    kin = TorchKinematics(ch)
    qpos, qvel = _states(ch)
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    pos, rot, joints = ch.qpos_to_pose(qpos)
    tpos, trot, tjoints = kin.qpos_to_pose(f(qpos))
    np.testing.assert_allclose(tpos.numpy(), pos, atol=1e-6)
    _same_rotation(trot.numpy(), rot, 1e-6)
    _same_rotation(tjoints.numpy(), joints, 1e-6)
    np.testing.assert_allclose(kin.joint_rot_to_dof(tjoints).numpy(), ch.joint_rot_to_dof(joints), atol=1e-5)
    ours, theirs = kin.parc_state(f(qpos), f(qvel)), ch.parc_state(qpos, qvel)
    assert set(ours) == set(theirs)
    for key in theirs:
        if key == "root_rot":
            _same_rotation(ours[key].numpy(), theirs[key], 1e-6)
        else:
            np.testing.assert_allclose(ours[key].numpy(), theirs[key], atol=1e-5, err_msg=key)


def test_termination_check_matches_numpy(ch):
    kin = TorchKinematics(ch)
    qpos, _ = _states(ch, seed=1)
    ref_qpos, _ = _states(ch, seed=2)
    ref_qpos[:32] = qpos[:32] + 0.01  # half the batch close to its reference, half far from it
    settings = termination.TerminationSettings()
    sim, ref = ch.qpos_to_pose(qpos), ch.qpos_to_pose(ref_qpos)
    expected = termination.check(ch.body_positions(*sim), sim[1], ch.body_positions(*ref), ref[1], settings)
    tsim = kin.qpos_to_pose(torch.as_tensor(qpos, dtype=torch.float32))
    tref = kin.qpos_to_pose(torch.as_tensor(ref_qpos, dtype=torch.float32))
    code, body, errors = termination_torch.check(
        kin.body_positions(*tsim), tsim[1], kin.body_positions(*tref), tref[1], settings,
        torch.tensor(settings.body_offset_limits))
    assert set(expected.code.tolist()) >= {termination.OK, termination.ROOT_POSITION}
    np.testing.assert_array_equal(code.numpy(), expected.code)
    np.testing.assert_array_equal(body.numpy(), expected.body)
    np.testing.assert_allclose(errors.numpy(), expected.errors, rtol=1e-4, atol=1e-4)


def test_quaternion_twins_match_numpy():
    rng = np.random.default_rng(3)
    a, b = quat.normalize(rng.normal(size=(100, 4))), quat.normalize(rng.normal(size=(100, 4)))
    axis = quat.normalize(rng.normal(size=(100, 3)))
    t = lambda x: torch.as_tensor(x)  # noqa: E731
    np.testing.assert_allclose(tq.from_mujoco(t(quat.to_mujoco(a))).numpy(), a)
    np.testing.assert_allclose(tq.quat_to_exp_map(t(a)).numpy(), quat.quat_to_exp_map(a), atol=1e-12)
    np.testing.assert_allclose(tq.angle_between(t(a), t(b)).numpy(), quat.angle_between(a, b), atol=1e-12)
    np.testing.assert_allclose(tq.hinge_angle(t(a), t(axis)).numpy(), quat.hinge_angle(a, axis), atol=1e-12)
