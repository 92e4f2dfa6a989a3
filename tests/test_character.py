"""The character: PARC's body/DOF layout, gains and bounds, hinge-triplet conversion, FK and state maps.

Everything is checked against MuJoCo itself (compiled models, mj_kinematics, mj_integratePos)
or against the numbers in PARC_RECORDING_FACTS.md, never against physrec's own output alone.
"""

from pathlib import Path

import mujoco
import numpy as np
import pytest

from physrec.motion import quat
from physrec.motion.character import BALL, FIXED, HINGE, Character, CharacterError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"
PARC_XML = SHARED / "humanoid.xml"
needs_parc_xml = pytest.mark.skipif(not PARC_XML.is_file(),
                                    reason=f"PARC sample character {PARC_XML} is absent (../shared not mounted)")

PARC_BODIES = ("pelvis", "torso", "head", "right_upper_arm", "right_lower_arm", "right_hand", "left_upper_arm",
               "left_lower_arm", "left_hand", "right_thigh", "right_shin", "right_foot", "left_thigh", "left_shin",
               "left_foot")

# PARC_RECORDING_FACTS.md section 4: joint of body 1..14, its DOF count, kp/kd.
PARC_JOINTS = [  # (body, dof, kp, kd)
    ("torso", 3, 1000, 100), ("head", 3, 100, 10),
    ("right_upper_arm", 3, 400, 40), ("right_lower_arm", 1, 300, 30), ("right_hand", 0, None, None),
    ("left_upper_arm", 3, 400, 40), ("left_lower_arm", 1, 300, 30), ("left_hand", 0, None, None),
    ("right_thigh", 3, 500, 50), ("right_shin", 1, 500, 50), ("right_foot", 3, 400, 40),
    ("left_thigh", 3, 500, 50), ("left_shin", 1, 500, 50), ("left_foot", 3, 400, 40),
]

# PARC_RECORDING_FACTS.md section 2, action bounds table (radians, 3 decimals).
PARC_BOUNDS = {
    "torso": (-1.885, 1.885), "head": (-1.257, 1.257),
    "right_upper_arm": (-3.351, 3.351), "left_upper_arm": (-3.351, 3.351),
    "right_thigh": (-2.932, 2.932), "left_thigh": (-2.932, 2.932),
    "right_foot": (-1.152, 1.152), "left_foot": (-1.152, 1.152),
    "right_lower_arm": (-0.559, 3.351), "right_shin": (-0.559, 3.351), "left_shin": (-0.559, 3.351),
    "left_lower_arm": (-3.351, 0.559),
}


@pytest.fixture(scope="module")
def model(ch):
    return mujoco.MjModel.from_xml_string(ch.mjcf)


def _random_pose(ch, rng, n):
    root_pos = rng.normal(size=(n, 3)) + np.array([0.0, 0.0, 1.0])
    q = rng.normal(size=(n, 4))
    root_rot = q / np.linalg.norm(q, axis=-1, keepdims=True)
    dof = rng.uniform(-1.2, 1.2, size=(n, ch.num_dof))
    return root_pos, root_rot, ch.dof_to_joint_rot(dof), dof


def _same_rotation(a, b, atol):
    """Elementwise over leading dims: q and -q are the same rotation."""
    d = np.minimum(np.abs(a - b).max(axis=-1), np.abs(a + b).max(axis=-1))
    return bool(np.all(d < atol)), float(d.max())


# -- layout, gains, bounds ---------------------------------------------------------------------
def test_builtin_layout_is_parcs(ch, model):
    assert ch.body_names == PARC_BODIES
    assert ch.num_bodies == 15 and ch.num_joints == 14 and ch.num_dof == 28
    parents = [PARC_BODIES[p] if p >= 0 else None for p in ch.parents]
    assert parents == [None, "pelvis", "torso", "torso", "right_upper_arm", "right_lower_arm", "torso",
                       "left_upper_arm", "left_lower_arm", "pelvis", "right_thigh", "right_shin", "pelvis",
                       "left_thigh", "left_shin"]
    widths = [s.stop - s.start for s in ch.dof_slices]
    assert widths == [j[1] for j in PARC_JOINTS]
    assert ch.joint_types == tuple({0: FIXED, 1: HINGE, 3: BALL}[w] for w in widths)
    # DOF indices as in the facts table: r_elbow 9, l_elbow 13, knees 17 and 24.
    assert ch.dof_slices[3] == slice(9, 10) and ch.dof_slices[6] == slice(13, 14)
    assert ch.dof_slices[9] == slice(17, 18) and ch.dof_slices[12] == slice(24, 25)
    assert ch.dof_slices[13] == slice(25, 28)
    # Hinge axes: elbows about z, knees about y.
    np.testing.assert_array_equal(ch.hinge_axes[3], [0, 0, 1])
    np.testing.assert_array_equal(ch.hinge_axes[6], [0, 0, 1])
    np.testing.assert_array_equal(ch.hinge_axes[9], [0, 1, 0])
    np.testing.assert_array_equal(ch.hinge_axes[12], [0, 1, 0])
    assert ch.nq == 7 + 8 * 4 + 4 and ch.nv == 6 + 28
    assert model.nu == 28


def test_builtin_gains_are_parcs(ch):
    kp = np.concatenate([[k] * n for _, n, k, _ in PARC_JOINTS if n])
    kd = np.concatenate([[d] * n for _, n, _, d in PARC_JOINTS if n])
    np.testing.assert_array_equal(ch.kp, kp)
    np.testing.assert_array_equal(ch.kd, kd)


def test_builtin_action_bounds_are_parcs(ch):
    for j, (body, n, _, _) in enumerate(PARC_JOINTS):
        if not n:
            continue
        s = ch.dof_slices[j]
        lo, hi = PARC_BOUNDS[body]
        np.testing.assert_allclose(ch.action_low[s], lo, atol=6e-4, err_msg=body)
        np.testing.assert_allclose(ch.action_high[s], hi, atol=6e-4, err_msg=body)
    clipped = ch.clip_action(np.full(28, 10.0))
    np.testing.assert_array_equal(clipped, ch.action_high)


def test_servos_are_pd_with_parc_gains(ch, model):
    """Position servos: force = kp (target - q) - kd qdot, checked by MuJoCo's actuator force."""
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    data.qpos[:3] = [0, 0, 1]
    rng = np.random.default_rng(0)
    target = rng.uniform(-0.3, 0.3, size=28)
    data.ctrl[:] = target
    data.qvel[6:] = rng.uniform(-1, 1, size=28)
    mujoco.mj_forward(model, data)
    # All joints at zero: the length of each servo is 0 and its velocity is its qvel entry.
    qv = np.zeros(28)
    for j, s in enumerate(ch.dof_slices):
        if s.stop > s.start:
            a = ch.qvel_adr[j]
            qv[s] = data.qvel[a:a + s.stop - s.start]
    np.testing.assert_allclose(data.actuator_force, ch.kp * target - ch.kd * qv, rtol=1e-9, atol=1e-9)


# -- PARC's hinge-triplet file -----------------------------------------------------------------
@needs_parc_xml
def test_parc_file_converts_to_the_builtin_model(ch, model):
    parc = Character.load(str(PARC_XML))
    assert parc.body_names == ch.body_names
    assert parc.joint_types == ch.joint_types
    assert parc.dof_slices == ch.dof_slices
    np.testing.assert_allclose(parc.offsets, ch.offsets, atol=1e-12)
    np.testing.assert_array_equal(parc.parents, ch.parents)
    np.testing.assert_array_equal(parc.kp, ch.kp)
    np.testing.assert_array_equal(parc.kd, ch.kd)
    np.testing.assert_allclose(parc.action_low, ch.action_low, atol=1e-6)
    np.testing.assert_allclose(parc.action_high, ch.action_high, atol=1e-6)
    np.testing.assert_allclose(parc.hinge_axes, ch.hinge_axes)

    pm = mujoco.MjModel.from_xml_string(parc.mjcf)
    for field in ("body_mass", "body_inertia", "body_pos", "body_ipos", "jnt_type", "jnt_range", "dof_armature",
                  "dof_damping", "jnt_stiffness", "actuator_gainprm", "actuator_biasprm", "actuator_gear",
                  "geom_size", "geom_friction", "geom_condim"):
        np.testing.assert_allclose(np.asarray(getattr(pm, field), dtype=float),
                                   np.asarray(getattr(model, field), dtype=float), atol=1e-6, err_msg=field)
    # Each x/y/z hinge triplet became one ball joint; hinges stay hinges; no passive springs.
    types = [mujoco.mjtJoint(t) for t in pm.jnt_type]
    assert types.count(mujoco.mjtJoint.mjJNT_FREE) == 1
    assert types.count(mujoco.mjtJoint.mjJNT_BALL) == 8
    assert types.count(mujoco.mjtJoint.mjJNT_HINGE) == 4
    for b in ("torso", "head", "right_upper_arm", "left_upper_arm", "right_thigh", "left_thigh", "right_foot",
              "left_foot"):
        bid = mujoco.mj_name2id(pm, mujoco.mjtObj.mjOBJ_BODY, b)
        assert pm.body_jntnum[bid] == 1 and pm.jnt_type[pm.body_jntadr[bid]] == mujoco.mjtJoint.mjJNT_BALL, b
    assert np.all(pm.jnt_stiffness == 0) and np.all(pm.dof_damping == 0)
    # The floor geom and its undefined material are gone (MuJoCo refuses the file as it is).
    assert pm.ngeom == model.ngeom


@needs_parc_xml
def test_parc_file_same_kinematics_as_builtin(ch):
    """A ball joint in exp-map coordinates, not three chained hinges: same world poses for the same DOF."""
    parc = Character.load(str(PARC_XML))
    m_b, m_p = mujoco.MjModel.from_xml_string(ch.mjcf), mujoco.MjModel.from_xml_string(parc.mjcf)
    d_b, d_p = mujoco.MjData(m_b), mujoco.MjData(m_p)
    rng = np.random.default_rng(11)
    root_pos, root_rot, joint_rot, _ = _random_pose(ch, rng, 5)
    for i in range(5):
        d_b.qpos[:] = ch.pose_to_qpos(root_pos[i], root_rot[i], joint_rot[i])
        d_p.qpos[:] = parc.pose_to_qpos(root_pos[i], root_rot[i], joint_rot[i])
        mujoco.mj_kinematics(m_b, d_b)
        mujoco.mj_kinematics(m_p, d_p)
        np.testing.assert_allclose(d_p.xpos, d_b.xpos, atol=1e-12)


# -- forward kinematics and state conversions --------------------------------------------------
def test_forward_kinematics_matches_mujoco(ch, model):
    data = mujoco.MjData(model)
    rng = np.random.default_rng(1)
    root_pos, root_rot, joint_rot, _ = _random_pose(ch, rng, 20)
    pos, rot = ch.forward_kinematics(root_pos, root_rot, joint_rot)
    root_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "pelvis")
    for i in range(20):
        data.qpos[:] = ch.pose_to_qpos(root_pos[i], root_rot[i], joint_rot[i])
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(pos[i], data.xpos[root_id:], atol=1e-12)
        # The matrix FK used on the recorder's hot path.
        np.testing.assert_allclose(ch.body_positions(root_pos[i], root_rot[i], joint_rot[i]),
                                   data.xpos[root_id:], atol=1e-12)
        ok, err = _same_rotation(rot[i], quat.from_mujoco(data.xquat[root_id:]), 1e-12)
        assert ok, err


def test_forward_kinematics_rest_pose():
    """T-pose at the origin: body positions are the summed offsets; arms along +-y."""
    ch = Character.load()
    pos, rot = ch.forward_kinematics(np.zeros(3), quat.identity(), quat.identity((14,)))
    i = ch.body_names.index
    np.testing.assert_allclose(pos[i("right_hand")], [-0.02405, -0.18311 - 0.274788 - 0.258947, 0.236151 + 0.24350],
                               atol=1e-9)
    np.testing.assert_allclose(pos[i("left_foot")], [0, 0.084887, -0.421546 - 0.409870], atol=1e-9)
    np.testing.assert_allclose(rot, quat.identity((15,)), atol=0)


def test_dof_joint_rot_round_trip(ch):
    rng = np.random.default_rng(2)
    dof = rng.uniform(-1.5, 1.5, size=(30, 28))  # ball triples stay below pi (the map's range)
    for j in (3, 6, 9, 12):  # hinges: anything in (-pi, pi)
        dof[:, ch.dof_slices[j]] = rng.uniform(-3.0, 3.0, size=(30, 1))
    jr = ch.dof_to_joint_rot(dof)
    assert jr.shape == (30, 14, 4)
    np.testing.assert_allclose(np.linalg.norm(jr, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(ch.joint_rot_to_dof(jr), dof, atol=1e-9)
    # Fixed joints (hands) are the identity.
    np.testing.assert_array_equal(jr[:, 4], quat.identity((30,)))
    # Ball joints: the exp map of the DOF triple; hinge: a rotation about its axis.
    np.testing.assert_allclose(jr[:, 0], quat.exp_map_to_quat(dof[:, 0:3]), atol=1e-15)
    np.testing.assert_allclose(jr[:, 9], quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), dof[:, 17]), atol=1e-15)
    # Random ball rotations survive joint_rot -> dof -> joint_rot (up to sign).
    q = rng.normal(size=(30, 14, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[:, [3, 6, 9, 12]] = jr[:, [3, 6, 9, 12]]  # hinges keep their pure twist
    q[:, [4, 7]] = quat.identity((30, 2))
    back = ch.dof_to_joint_rot(ch.joint_rot_to_dof(q))
    ok, err = _same_rotation(back, q, 1e-9)
    assert ok, err


def test_qpos_round_trip(ch, model):
    rng = np.random.default_rng(3)
    root_pos, root_rot, joint_rot, dof = _random_pose(ch, rng, 25)
    qpos = ch.pose_to_qpos(root_pos, root_rot, joint_rot)
    assert qpos.shape == (25, model.nq)
    np.testing.assert_allclose(qpos[:, 3:7], quat.to_mujoco(root_rot), atol=1e-12)  # scalar first in qpos
    p, r, j = ch.qpos_to_pose(qpos)
    np.testing.assert_allclose(p, root_pos, atol=0)
    ok, err = _same_rotation(r, root_rot, 1e-12)
    assert ok, err
    ok, err = _same_rotation(j, joint_rot, 1e-12)
    assert ok, err
    np.testing.assert_allclose(ch.joint_rot_to_dof(j), dof, atol=1e-9)
    # Hinge qpos entries are the hinge angles themselves.
    for jj in (3, 6, 9, 12):
        np.testing.assert_allclose(qpos[:, ch.qpos_adr[jj]], dof[:, ch.dof_slices[jj].start], atol=1e-12)


def test_velocities_to_qvel_root_angular_velocity_is_body_frame(ch, model):
    """qvel from world-frame PARC velocities: MuJoCo's cvel and integration reproduce them."""
    data = mujoco.MjData(model)
    rng = np.random.default_rng(4)
    root_pos, root_rot, joint_rot, _ = _random_pose(ch, rng, 8)
    lin = rng.normal(size=(8, 3))
    ang = rng.normal(size=(8, 3)) * 2.0
    dof_vel = rng.normal(size=(8, 28))
    qvel = ch.velocities_to_qvel(root_rot, lin, ang, dof_vel)
    root_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "pelvis")
    dt = 1e-6
    for i in range(8):
        data.qpos[:] = ch.pose_to_qpos(root_pos[i], root_rot[i], joint_rot[i])
        data.qvel[:] = qvel[i]
        mujoco.mj_forward(model, data)
        # cvel = [world angular velocity, linear velocity at the subtree com]; its angular part is frame free.
        np.testing.assert_allclose(data.cvel[root_id, :3], ang[i], atol=1e-9)
        # The root's linear velocity is world-frame, as in PARC.
        np.testing.assert_allclose(data.qvel[:3], lin[i], atol=0)
        # Finite differences: integrate the position and compare with PARC's definitions.
        q1 = data.qpos.copy()
        mujoco.mj_integratePos(model, q1, data.qvel, dt)
        p1, r1, j1 = ch.qpos_to_pose(q1)
        ang_fd = quat.quat_to_exp_map(quat.mul(r1, quat.conj(root_rot[i]))) / dt  # PARC: expmap(q1 q0^-1)/dt
        np.testing.assert_allclose(ang_fd, ang[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose((p1 - root_pos[i]) / dt, lin[i], rtol=1e-6, atol=1e-6)
        _, _, j0 = ch.qpos_to_pose(data.qpos.copy())
        np.testing.assert_allclose(ch.dof_vel(j0, j1, dt), dof_vel[i], rtol=1e-4, atol=1e-4)


def test_velocities_to_qvel_identity_root_is_unchanged(ch):
    ang = np.array([[0.3, -0.2, 1.5]])
    qvel = ch.velocities_to_qvel(quat.identity((1,)), np.zeros((1, 3)), ang, np.zeros((1, 28)))
    np.testing.assert_allclose(qvel[0, 3:6], ang[0], atol=1e-15)
    # Yawed 90 degrees: a world x rotation is a body -y rotation.
    yaw = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.array([np.pi / 2]))
    qvel = ch.velocities_to_qvel(yaw, np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]]), np.zeros((1, 28)))
    np.testing.assert_allclose(qvel[0, 3:6], [0.0, -1.0, 0.0], atol=1e-12)


# -- bad files -------------------------------------------------------------------------------------
def test_missing_character_file_names_it(tmp_path):
    path = tmp_path / "nowhere" / "humanoid.xml"
    with pytest.raises(CharacterError) as e:
        Character.load(str(path))
    assert str(path) in str(e.value)
    assert "not found" in str(e.value)


@pytest.mark.parametrize("content, says", [
    ("this is not xml at all <<<", "XML"),
    (b"\x80\x04this is a pickle, not xml", "XML"),
    ("<robot name='urdf'><link name='a'/></robot>", "MJCF"),
    ("<mujoco><worldbody><body name='pelvis'><freejoint/>"
     "<geom type='sphere' size='0.1' density='not-a-number'/></body></worldbody></mujoco>", "MuJoCo"),
], ids=["text", "binary", "not-mjcf", "mujoco-refuses"])
def test_bad_character_file_names_it(tmp_path, content, says):
    path = tmp_path / "char.xml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CharacterError) as e:
        Character.load(str(path))
    assert str(path) in str(e.value)
    assert says in str(e.value)
