"""Feed-forward PD-target offsets from inverse dynamics along a reference.

A PD servo's torque is kp (target - q) - kd qdot. Holding the reference exactly would need
the joint torques tau that MuJoCo's inverse dynamics (`mj_inverse`) gives for the
reference's positions, velocities and accelerations; a target offset of tau / kp supplies
them where the servo would otherwise have to fall behind to produce them. Only the joints'
torques are used: the root's six generalized forces would be forces from outside the
character, which nothing applies (the offsets only move PD targets, as the velocity
feed-forward kd/kp x qdot_ref does).

Three ways to account for the ground:

- ``inverse``: the joint torques of `mj_inverse` without contacts, less those of ground
  forces that carry the root's residual: the reference's contact points (the character's
  geoms within `CONTACT_MARGIN` of the terrain, at the step's pose) take the smallest
  forces that supply the six root forces inverse dynamics asks for, and the legs (or hands)
  that touch the ground carry them to the root. In flight nothing is subtracted.
- ``inverse_free``: contacts ignored: the torques that accelerate each limb and hold it
  against gravity as if the root were held (stance legs get a swing leg's torques).
- ``inverse_mujoco``: `mj_inverse` with MuJoCo's soft contacts on the motion's terrain; the
  contact forces follow from the reference's penetration and acceleration, which a
  kinematic reference does not keep consistent (measured: forces of tens of kN).

Each control step's offset is evaluated at the middle of the step: the pose there, the
reference's velocity over the step (its forward difference) and the central difference
of the velocities around it.
"""

from __future__ import annotations

import mujoco
import numpy as np

from physrec.motion.character import Character

MODES = ("none", "inverse", "inverse_free", "inverse_mujoco")
CONTACT_MARGIN = 0.03  # metres: a geom this close to the terrain can push on it
FORCE_DAMPING = 0.1  # Tikhonov damping of the ground forces' least squares (N and N m)


def world_models(character: Character, boxes: np.ndarray | None, count: int, control_dt: float, substeps: int
                 ) -> list[mujoco.MjModel]:
    """The recorder's world (sim.world) on each of `count` terrains (boxes [count, slots, 6]) as
    CPU MuJoCo models, compiled once (attempts on the same terrain share a model); without
    boxes, no terrain (then ``inverse`` finds no contact)."""
    from physrec.sim.backend import BackendSpec
    from physrec.sim.mujoco import MujocoBackend
    from physrec.sim.world import PhysicsSettings, compile_world
    control_hz = int(round(1.0 / control_dt))
    settings = PhysicsSettings(control_hz=control_hz, physics_hz=control_hz * substeps)
    if boxes is None:
        return [compile_world(character, 1, settings)] * count
    sim = MujocoBackend(BackendSpec(), character, settings, count, boxes.shape[1])
    sim.set_terrain(np.arange(count), np.asarray(boxes))
    models = list(sim.models)
    sim.close()
    return models


def world_model(character: Character, boxes: np.ndarray | None, control_dt: float, substeps: int
                ) -> mujoco.MjModel:
    """world_models for one terrain (boxes [slots, 6])."""
    return world_models(character, None if boxes is None else np.asarray(boxes)[None], 1, control_dt, substeps)[0]


def reference_dynamics(ref, character: Character, motion: np.ndarray, times: np.ndarray, dt: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MuJoCo qpos [n, nq], qvel [n, nv], qacc [n, nv] of the reference in the middle of the
    control steps that start at `times` (each `dt` long)."""
    ch = character
    pose = ref.pose(motion, times + 0.5 * dt)
    qpos = ch.pose_to_qpos(pose.root_pos, pose.root_rot, pose.joint_rot)

    def qvel_at(t: np.ndarray) -> np.ndarray:
        v = ref.velocity(motion, t)
        p = ref.pose(motion, t)
        return ch.velocities_to_qvel(p.root_rot, v.root_lin_vel, v.root_ang_vel, v.dof_vel)

    qvel = qvel_at(times)  # the forward difference over the step
    before, after = qvel_at(times - dt), qvel_at(times + dt)
    qacc = (after - before) / (2.0 * dt)
    return qpos, qvel, qacc


def joint_torques(model: mujoco.MjModel, character: Character, qpos: np.ndarray, qvel: np.ndarray,
                  qacc: np.ndarray, mode: str) -> np.ndarray:
    """Inverse dynamics' generalized forces on the character's DOF [n, D] (PARC's DOF order)."""
    m = model
    saved_flags, saved_margin = int(m.opt.disableflags), m.geom_margin.copy()
    nterrain = int(np.sum(m.geom_bodyid == 0))
    adr = character._layout.dof_qvel
    out = np.zeros((len(qpos), character.num_dof))
    try:
        if mode != "inverse_mujoco":
            m.opt.disableflags = saved_flags | int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
        d = mujoco.MjData(m)
        jac = np.zeros((3, m.nv))
        for i in range(len(qpos)):
            d.qpos[:], d.qvel[:], d.qacc[:] = qpos[i], qvel[i], qacc[i]
            mujoco.mj_inverse(m, d)
            tau = d.qfrc_inverse.copy()
            if mode == "inverse":
                tau -= _ground_forces(m, d, tau[:6], jac, saved_flags, nterrain, saved_margin)
            out[i] = tau[adr]
    finally:
        m.opt.disableflags, m.geom_margin[:] = saved_flags, saved_margin
    return out


def _ground_forces(m: mujoco.MjModel, d: mujoco.MjData, residual: np.ndarray, jac: np.ndarray, flags: int,
                   nterrain: int, margin: np.ndarray) -> np.ndarray:
    """Generalized forces [nv] of the smallest point forces at the pose's contact points whose
    root part is `residual` (damped least squares); zero where nothing touches."""
    m.opt.disableflags = flags
    m.geom_margin[:] = margin
    m.geom_margin[nterrain:] = CONTACT_MARGIN
    mujoco.mj_fwdPosition(m, d)  # kinematics and collision at qpos, with the wider margin
    m.geom_margin[:] = margin
    m.opt.disableflags = flags | int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    cols = []
    for c in range(d.ncon):
        con = d.contact[c]
        body = int(m.geom_bodyid[con.geom1]) if con.geom1 >= nterrain else int(m.geom_bodyid[con.geom2])
        mujoco.mj_jac(m, d, jac, None, con.pos, body)
        cols.append(jac.T.copy())  # [nv, 3]: generalized force of a unit world force at the point
    if not cols:
        return np.zeros(m.nv)
    J = np.concatenate(cols, axis=1)  # [nv, 3k]
    A = J[:6]
    f = A.T @ np.linalg.solve(A @ A.T + FORCE_DAMPING ** 2 * np.eye(6), residual)
    return J @ f


def target_offsets(mode: str, model: mujoco.MjModel, character: Character, ref, motion: np.ndarray,
                   times: np.ndarray, dt: float, scale: float = 1.0) -> np.ndarray:
    """PD-target offsets [n, D] (tau / kp) for the control steps starting at `times`."""
    if mode == "none":
        return np.zeros((len(times), character.num_dof))
    if mode not in MODES:
        raise ValueError(f"feed-forward mode {mode!r}; expected one of {', '.join(MODES)}")
    qpos, qvel, qacc = reference_dynamics(ref, character, motion, times, dt)
    tau = joint_torques(model, character, qpos, qvel, qacc, mode)
    kp = character.kp
    return scale * np.where(kp > 0, tau / np.maximum(kp, 1e-12), 0.0)
