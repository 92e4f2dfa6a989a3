"""Quaternion maths (scalar-last, PARC's order), checked against independent formulas."""

import numpy as np
import pytest

from physrec.motion import quat


def _random_unit_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _matrix(q_xyzw):
    """Rotation matrix of a unit quaternion (x, y, z, w), written out by hand (not via physrec)."""
    x, y, z, w = q_xyzw
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _axis_angle_matrix(axis, angle):
    """Rodrigues' formula, independent of quaternions."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _same_rotation(a, b, atol=1e-9):
    """q and -q are the same rotation."""
    a, b = np.asarray(a), np.asarray(b)
    return np.allclose(a, b, atol=atol) or np.allclose(a, -b, atol=atol)


def test_mujoco_order_conversion():
    q = np.array([0.1, 0.2, 0.3, 0.9])  # x, y, z, w
    m = quat.to_mujoco(q)
    np.testing.assert_array_equal(m, [0.9, 0.1, 0.2, 0.3])  # w, x, y, z
    np.testing.assert_array_equal(quat.from_mujoco(m), q)
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(5, 7, 4))
    np.testing.assert_array_equal(quat.from_mujoco(quat.to_mujoco(batch)), batch)
    np.testing.assert_array_equal(quat.to_mujoco(quat.from_mujoco(batch)), batch)


def test_mujoco_order_matches_mujoco_itself():
    """A rotation of 90 deg about z: MuJoCo's own quaternion (w,x,y,z) maps to (0,0,s,c) in PARC's order."""
    mujoco = pytest.importorskip("mujoco")
    res = np.zeros(4)
    mujoco.mju_axisAngle2Quat(res, np.array([0.0, 0.0, 1.0]), np.pi / 2)
    np.testing.assert_allclose(quat.from_mujoco(res), [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)], atol=1e-12)


def test_rotate_matches_rotation_matrix():
    rng = np.random.default_rng(1)
    qs = _random_unit_quats(rng, 50)
    vs = rng.normal(size=(50, 3))
    got = quat.rotate(qs, vs)
    want = np.stack([_matrix(q) @ v for q, v in zip(qs, vs)])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_to_matrix_matches_rotation_matrix():
    rng = np.random.default_rng(7)
    qs = _random_unit_quats(rng, 20)
    got = quat.to_matrix(qs)
    assert got.shape == (20, 3, 3)
    for q, m in zip(qs, got):
        np.testing.assert_allclose(m, _matrix(q), atol=1e-12)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    vs = rng.normal(size=(20, 3))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", got, vs), quat.rotate(qs, vs), atol=1e-12)


def test_from_axis_angle_matches_rodrigues():
    rng = np.random.default_rng(2)
    for _ in range(20):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(-np.pi, np.pi)
        np.testing.assert_allclose(_matrix(quat.from_axis_angle(axis, angle)), _axis_angle_matrix(axis, angle),
                                   atol=1e-12)


def test_mul_composes_like_matrices():
    """mul(a, b) applies b first, then a: R(a*b) = R(a) R(b)."""
    rng = np.random.default_rng(3)
    a, b = _random_unit_quats(rng, 30), _random_unit_quats(rng, 30)
    ab = quat.mul(a, b)
    for qa, qb, qab in zip(a, b, ab):
        np.testing.assert_allclose(_matrix(qab), _matrix(qa) @ _matrix(qb), atol=1e-12)
    # Identity and inverse.
    np.testing.assert_allclose(quat.mul(a, quat.identity((30,))), a, atol=1e-15)
    np.testing.assert_allclose(quat.mul(a, quat.conj(a)), quat.identity((30,)), atol=1e-12)


def test_exp_map_round_trip_random():
    rng = np.random.default_rng(4)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = rng.uniform(0.0, np.pi - 1e-6, size=(200, 1))
    e = axes * angles
    q = quat.exp_map_to_quat(e)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat.quat_to_exp_map(q), e, atol=1e-9)
    # And the quaternion is the rotation by |e| about e/|e|.
    for ei, qi in zip(e[:20], q[:20]):
        np.testing.assert_allclose(_matrix(qi), _axis_angle_matrix(ei, np.linalg.norm(ei)), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3])
def test_exp_map_round_trip_near_zero(angle):
    axis = np.array([0.3, -0.5, 0.8])
    axis /= np.linalg.norm(axis)
    e = axis * angle
    q = quat.exp_map_to_quat(e)
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
    np.testing.assert_allclose(q[:3], axis * np.sin(angle / 2), atol=1e-15)
    np.testing.assert_allclose(quat.quat_to_exp_map(q), e, atol=1e-14)


@pytest.mark.parametrize("delta", [1e-3, 1e-6, 1e-9])
def test_exp_map_round_trip_near_pi(delta):
    axis = np.array([-0.2, 0.9, 0.4])
    axis /= np.linalg.norm(axis)
    e = axis * (np.pi - delta)
    q = quat.exp_map_to_quat(e)
    np.testing.assert_allclose(quat.quat_to_exp_map(q), e, atol=1e-8)
    # Just over pi: the map returns the same rotation as the short way round (angle <= pi).
    e_over = axis * (np.pi + delta)
    back = quat.quat_to_exp_map(quat.exp_map_to_quat(e_over))
    assert np.linalg.norm(back) <= np.pi + 1e-12
    assert _same_rotation(quat.exp_map_to_quat(back), quat.exp_map_to_quat(e_over), atol=1e-8)


def test_quat_to_exp_map_ignores_sign():
    rng = np.random.default_rng(5)
    q = _random_unit_quats(rng, 50)
    np.testing.assert_allclose(quat.quat_to_exp_map(q), quat.quat_to_exp_map(-q), atol=1e-12)
    assert np.all(np.linalg.norm(quat.quat_to_exp_map(q), axis=-1) <= np.pi + 1e-12)


def test_angle_between():
    a = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), 0.3)
    b = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), 1.3)
    np.testing.assert_allclose(quat.angle_between(a, b), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat.angle_between(a, -a), 0.0, atol=1e-7)


def test_slerp_endpoints_and_midpoint():
    rng = np.random.default_rng(6)
    a, b = _random_unit_quats(rng, 40), _random_unit_quats(rng, 40)
    s0, s1, mid = quat.slerp(a, b, np.zeros(40)), quat.slerp(a, b, np.ones(40)), quat.slerp(a, b, np.full(40, 0.5))
    for i in range(40):
        assert _same_rotation(s0[i], a[i])
        assert _same_rotation(s1[i], b[i])
    total = quat.angle_between(b, a)
    np.testing.assert_allclose(quat.angle_between(mid, a), total / 2, atol=1e-9)
    np.testing.assert_allclose(quat.angle_between(b, mid), total / 2, atol=1e-9)
    # A quarter of the way: a quarter of the angle.
    q = quat.slerp(a, b, np.full(40, 0.25))
    np.testing.assert_allclose(quat.angle_between(q, a), total / 4, atol=1e-9)


def test_slerp_takes_the_shorter_arc_and_handles_equal_inputs():
    a = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), 0.2)
    b = -quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), 0.6)  # same rotation as +, opposite sign
    mid = quat.slerp(a, b, 0.5)
    np.testing.assert_allclose(quat.angle_between(mid, a), 0.2, atol=1e-9)
    same = quat.slerp(a, a, 0.37)
    assert np.all(np.isfinite(same))
    assert _same_rotation(same, a)


def test_hinge_angle():
    axis = np.array([0.0, 1.0, 0.0])
    for angle in np.linspace(-np.pi + 1e-6, np.pi - 1e-6, 41):
        q = quat.from_axis_angle(axis, angle)
        np.testing.assert_allclose(quat.hinge_angle(q, axis), angle, atol=1e-9)
        np.testing.assert_allclose(quat.hinge_angle(-q, axis), angle, atol=1e-9)  # sign of q does not matter
        np.testing.assert_allclose(quat.hinge_angle(q, -axis), -angle, atol=1e-9)
    # A rotation about another axis has no twist about this one.
    np.testing.assert_allclose(quat.hinge_angle(quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), 0.7), axis), 0.0,
                               atol=1e-12)
    # Broadcasting over a batch.
    angles = np.array([-1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(quat.hinge_angle(quat.from_axis_angle(axis, angles), axis), angles, atol=1e-12)


def test_positive_w_and_heading():
    q = np.array([[0.1, 0.2, 0.3, -0.9], [0.1, 0.2, 0.3, 0.9]])
    np.testing.assert_array_equal(quat.positive_w(q)[:, 3] >= 0, [True, True])
    np.testing.assert_allclose(quat.heading(quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), 0.8)), 0.8, atol=1e-12)
