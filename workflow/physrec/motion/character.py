"""The simulated character: its MJCF, PARC's joint layout, and the conversions between them.

physrec's canonical character is an MJCF whose 3-DoF joints are ball joints driven by
three position servos each (see assets/humanoid.xml). PARC's own humanoid.xml writes
those joints as x/y/z hinge triplets, which PARC treats as one exponential-map joint but
MuJoCo would chain as three rotations; :func:`canonical_mjcf` converts such a file.

This module is the one place that maps between PARC's pose layout (root position,
root rotation x,y,z,w, ``joint_rot`` [14, 4], 28 DOF in exponential-map coordinates)
and MuJoCo's ``qpos``/``qvel``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property, partial
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import mujoco
import numpy as np

from physrec.motion import quat

BUILTIN = "builtin:humanoid"

# PARC's action bounds for PD targets (_build_action_bounds_pd).
SPHERICAL_BOUND_SCALE = 1.2
HINGE_BOUND_SCALE = 0.7

FIXED, HINGE, BALL = 0, 1, 3


class CharacterError(ValueError):
    """A character file that cannot be used; the message names the file."""


def builtin_path() -> Path:
    return Path(str(resources.files("physrec") / "assets" / "humanoid.xml"))


def is_builtin(spec: str) -> bool:
    return spec in ("", BUILTIN, "builtin")


def resolve_character_path(spec: str) -> Path:
    return builtin_path() if is_builtin(spec) else Path(spec)


def _hinge_triplets(body: ET.Element) -> list[ET.Element]:
    return [j for j in body.findall("joint") if j.get("type", "hinge") == "hinge"]


def _joint_defaults(root: ET.Element, classname: str | None) -> dict[str, str]:
    """Attributes a <joint> inherits from its default class (one level, as PARC's file uses)."""
    out: dict[str, str] = {}
    default = root.find("default")
    if default is None:
        return out
    top = default.find("joint")
    if top is not None:
        out.update(top.attrib)
    if classname:
        for d in default.iter("default"):
            if d.get("class") == classname and d.find("joint") is not None:
                out.update(d.find("joint").attrib)  # type: ignore[union-attr]
    return out


def _body_classes(root: ET.Element) -> dict[int, str | None]:
    """childclass in force at each body (by id of the element)."""
    out: dict[int, str | None] = {}

    def walk(el: ET.Element, cls: str | None) -> None:
        for b in el.findall("body"):
            c = b.get("childclass", cls)
            out[id(b)] = c
            walk(b, c)

    walk(root.find("worldbody"), None)  # type: ignore[arg-type]
    return out


def _joint_attr(defaults: dict[str, str], joint: ET.Element, key: str, fallback: str) -> str:
    return joint.get(key, defaults.get(key, fallback))


def _fmt(x: float) -> str:
    return repr(float(x))


def canonical_mjcf(path: Path) -> str:
    """MJCF text of the character with ball joints and position servos.

    A file that already uses ball joints is returned as it is (minus anything that is not
    the character: floor geoms, materials). A PARC-style file is converted: each hinge
    triplet becomes one ball joint (cone range = largest per-axis limit, armature kept),
    joint stiffness/damping become servo kp/kv (Isaac Gym uses them as PD gains, so they
    must not also act as passive springs), motors are replaced by position servos with
    PARC's action bounds as ctrlrange.
    """
    try:
        root = ET.fromstring(Path(path).read_text())
    except FileNotFoundError as e:
        raise CharacterError(f"{path}: character file not found") from e
    except (ET.ParseError, UnicodeDecodeError) as e:
        raise CharacterError(f"{path}: not valid XML ({e})") from e
    if root.tag != "mujoco" or root.find("worldbody") is None:
        raise CharacterError(f"{path}: not an MJCF file (no <mujoco><worldbody>)")
    world = root.find("worldbody")
    assert world is not None
    for g in list(world.findall("geom")):  # floors and other world geoms: terrain comes from the motion
        world.remove(g)
    for el in root.iter():
        el.attrib.pop("material", None)
    for tag in ("asset", "visual", "option", "size"):
        for el in list(root.findall(tag)):
            root.remove(el)
    if not any(len(_hinge_triplets(b)) == 3 for b in world.iter("body")):
        return ET.tostring(root, encoding="unicode")

    classes = _body_classes(root)
    servos: list[ET.Element] = []
    for body in world.iter("body"):
        joints = body.findall("joint")
        defaults = _joint_defaults(root, joints[0].get("class", classes.get(id(body)))) if joints else {}
        attr = partial(_joint_attr, defaults)

        if len(joints) == 3:
            limits = np.deg2rad([[float(v) for v in attr(j, "range", "0 0").split()] for j in joints])
            bound = SPHERICAL_BOUND_SCALE * float(np.max(np.abs(limits)))
            name = joints[0].get("name", body.get("name", "joint"))
            name = name[:-2] if name.endswith("_x") else name
            kp, kd = attr(joints[0], "stiffness", "0"), attr(joints[0], "damping", "0")
            ball = ET.Element("joint", {
                "name": name, "type": "ball", "range": f"0 {_fmt(np.rad2deg(np.max(np.abs(limits))))}",
                "armature": attr(joints[0], "armature", "0"), "stiffness": "0", "damping": "0",
            })
            for j in joints:
                body.remove(j)
            body.insert(0, ball)
            for k, axis in enumerate(("1 0 0", "0 1 0", "0 0 1")):
                servos.append(ET.Element("position", {
                    "name": f"{name}_{'xyz'[k]}", "joint": name, "gear": axis, "kp": kp, "kv": kd,
                    "ctrlrange": f"{_fmt(-bound)} {_fmt(bound)}"}))
        elif len(joints) == 1 and attr(joints[0], "type", "hinge") == "hinge":
            j = joints[0]
            lo, hi = np.deg2rad([float(v) for v in attr(j, "range", "0 0").split()])
            mid, half = 0.5 * (lo + hi), HINGE_BOUND_SCALE * (hi - lo)
            kp, kd = attr(j, "stiffness", "0"), attr(j, "damping", "0")
            j.set("stiffness", "0")
            j.set("damping", "0")
            servos.append(ET.Element("position", {
                "name": j.get("name", body.get("name", "hinge")), "joint": j.get("name", ""), "kp": kp, "kv": kd,
                "ctrlrange": f"{_fmt(mid - half)} {_fmt(mid + half)}"}))
        elif joints and not (len(joints) == 1 and attr(joints[0], "type", "hinge") == "free"):
            raise CharacterError(f"{path}: body '{body.get('name')}' has {len(joints)} joints; "
                                 "expected none, one hinge or an x/y/z hinge triplet")
    for el in list(root.findall("actuator")):
        root.remove(el)
    actuator = ET.SubElement(root, "actuator")
    actuator.extend(servos)
    return ET.tostring(root, encoding="unicode")


def _reach(m: mujoco.MjModel, root_id: int) -> float:
    """Bound on how far any of the character's geoms extends from its root (default pose)."""
    d = mujoco.MjData(m)
    mujoco.mj_kinematics(m, d)
    geoms = np.flatnonzero(m.geom_bodyid >= root_id)
    dist = np.linalg.norm(d.geom_xpos[geoms] - d.xpos[root_id], axis=1) + m.geom_rbound[geoms]
    return float(dist.max()) if len(geoms) else 0.0


@dataclass(frozen=True)
class Character:
    """PARC's view of the character, read off the compiled MuJoCo model.

    Bodies are in MuJoCo's (depth-first XML) order, which is PARC's body order; body 0 is
    the root. ``dof_slices[j]`` is the slice of PARC's DOF vector for joint j (body j + 1).
    """

    mjcf: str
    body_names: tuple[str, ...]
    parents: np.ndarray  # [B] int, -1 for the root
    offsets: np.ndarray  # [B, 3] body position in its parent's frame
    joint_types: tuple[int, ...]  # [B-1] FIXED/HINGE/BALL for bodies 1..B-1
    hinge_axes: np.ndarray  # [B-1, 3]
    dof_slices: tuple[slice, ...]  # [B-1]
    qpos_adr: np.ndarray  # [B-1] MuJoCo qpos address of each joint (-1 for fixed)
    qvel_adr: np.ndarray  # [B-1]
    kp: np.ndarray  # [D]
    kd: np.ndarray  # [D]
    action_low: np.ndarray  # [D]
    action_high: np.ndarray  # [D]
    nq: int
    nv: int
    reach: float  # metres from the root body's origin to the farthest geom surface, in the default pose

    @property
    def num_bodies(self) -> int:
        return len(self.body_names)

    @property
    def num_joints(self) -> int:
        return len(self.body_names) - 1

    @property
    def num_dof(self) -> int:
        return len(self.kp)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def load(cls, spec: str = BUILTIN) -> "Character":
        path = resolve_character_path(spec)
        mjcf = canonical_mjcf(path)
        try:
            model = mujoco.MjModel.from_xml_string(mjcf)
        except ValueError as e:
            raise CharacterError(f"{path}: MuJoCo refused the character: {e}") from e
        return cls.from_model(model, mjcf, str(path))

    @classmethod
    def from_model(cls, m: mujoco.MjModel, mjcf: str, source: str = "<model>") -> "Character":
        root_id = next((b for b in range(1, m.nbody) if m.body_parentid[b] == 0), None)
        if root_id is None or m.body_jntnum[root_id] != 1 or m.jnt_type[m.body_jntadr[root_id]] != mujoco.mjtJoint.mjJNT_FREE:
            raise CharacterError(f"{source}: the character's root body needs a freejoint")
        bodies = list(range(root_id, m.nbody))
        names = tuple(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies)
        parents = np.array([-1] + [bodies.index(m.body_parentid[b]) for b in bodies[1:]])
        offsets = np.array([m.body_pos[b] for b in bodies], dtype=np.float64)
        if np.any(np.abs(m.body_quat[bodies][:, 0] - 1.0) > 1e-9):
            raise CharacterError(f"{source}: bodies with a rest rotation (quat) are not supported")
        types, axes, slices, qadr, vadr = [], [], [], [], []
        d = 0
        for b in bodies[1:]:
            n = m.body_jntnum[b]
            if n == 0:
                types.append(FIXED); axes.append(np.zeros(3)); slices.append(slice(d, d)); qadr.append(-1); vadr.append(-1)
                continue
            j = m.body_jntadr[b]
            t = int(m.jnt_type[j])
            if n != 1 or t not in (mujoco.mjtJoint.mjJNT_BALL, mujoco.mjtJoint.mjJNT_HINGE):
                raise CharacterError(f"{source}: body '{names[bodies.index(b)]}' needs one ball or hinge joint")
            width = 3 if t == mujoco.mjtJoint.mjJNT_BALL else 1
            types.append(BALL if width == 3 else HINGE)
            axes.append(np.array(m.jnt_axis[j], dtype=np.float64))
            slices.append(slice(d, d + width)); qadr.append(int(m.jnt_qposadr[j])); vadr.append(int(m.jnt_dofadr[j]))
            d += width
        kp, kd, lo, hi = (np.zeros(d) for _ in range(4))
        covered = np.zeros(d, dtype=bool)
        jnt_to_dof = {int(m.body_jntadr[b]): s for b, s in zip(bodies[1:], slices) if m.body_jntnum[b]}
        for a in range(m.nu):
            j = int(m.actuator_trnid[a, 0])
            if m.actuator_trntype[a] != mujoco.mjtTrn.mjTRN_JOINT or j not in jnt_to_dof:
                raise CharacterError(f"{source}: actuator {a} does not drive a character joint")
            s = jnt_to_dof[j]
            k = s.start + (int(np.argmax(np.abs(m.actuator_gear[a, :3]))) if s.stop - s.start == 3 else 0)
            kp[k] = m.actuator_gainprm[a, 0]
            kd[k] = -m.actuator_biasprm[a, 2]
            lo[k], hi[k] = m.actuator_ctrlrange[a]
            covered[k] = True
        if not covered.all():
            raise CharacterError(f"{source}: {int((~covered).sum())} DOF have no position servo")
        return cls(reach=_reach(m, root_id), mjcf=mjcf, body_names=names, parents=parents, offsets=offsets, joint_types=tuple(types),
                   hinge_axes=np.array(axes), dof_slices=tuple(slices), qpos_adr=np.array(qadr),
                   qvel_adr=np.array(vadr), kp=kp, kd=kd, action_low=lo, action_high=hi, nq=m.nq, nv=m.nv)

    # -- index arrays of the joint layout (every conversion below is one vectorised gather) --
    @cached_property
    def _layout(self) -> SimpleNamespace:
        ball = [j for j, t in enumerate(self.joint_types) if t == BALL]
        hinge = [j for j, t in enumerate(self.joint_types) if t == HINGE]
        moving = [j for j, t in enumerate(self.joint_types) if t != FIXED]
        s = self.dof_slices
        return SimpleNamespace(
            ball=np.array(ball, dtype=np.int64), hinge=np.array(hinge, dtype=np.int64),
            ball_dof=np.array([d for j in ball for d in range(s[j].start, s[j].stop)], dtype=np.int64),
            hinge_dof=np.array([s[j].start for j in hinge], dtype=np.int64),
            ball_qpos=np.array([self.qpos_adr[j] + k for j in ball for k in range(4)], dtype=np.int64),
            hinge_qpos=np.array([self.qpos_adr[j] for j in hinge], dtype=np.int64),
            dof_qvel=np.array([self.qvel_adr[j] + k for j in moving for k in range(s[j].stop - s[j].start)],
                              dtype=np.int64),
            hinge_axes=self.hinge_axes[hinge])

    # -- joint_rot <-> DOF ------------------------------------------------------------
    def joint_rot_to_dof(self, joint_rot: np.ndarray) -> np.ndarray:
        """[..., J, 4] local rotations -> [..., D] DOF (exp-map for ball joints, angle for hinges)."""
        L = self._layout
        out = np.zeros(joint_rot.shape[:-2] + (self.num_dof,))
        out[..., L.ball_dof] = quat.quat_to_exp_map(joint_rot[..., L.ball, :]).reshape(out.shape[:-1] + (-1,))
        out[..., L.hinge_dof] = quat.hinge_angle(joint_rot[..., L.hinge, :], L.hinge_axes)
        return out

    def dof_to_joint_rot(self, dof: np.ndarray) -> np.ndarray:
        L = self._layout
        out = quat.identity(dof.shape[:-1] + (self.num_joints,))
        out[..., L.ball, :] = quat.exp_map_to_quat(dof[..., L.ball_dof].reshape(dof.shape[:-1] + (-1, 3)))
        out[..., L.hinge, :] = quat.from_axis_angle(L.hinge_axes, dof[..., L.hinge_dof])
        return out

    def dof_vel(self, joint_rot0: np.ndarray, joint_rot1: np.ndarray, dt: float) -> np.ndarray:
        """PARC's DOF velocity between two poses: exp-map(q0^-1 q1)/dt for ball joints."""
        return self.joint_rot_to_dof(quat.mul(quat.conj(joint_rot0), joint_rot1)) / dt

    # -- PARC pose <-> MuJoCo state ----------------------------------------------------
    def pose_to_qpos(self, root_pos: np.ndarray, root_rot: np.ndarray, joint_rot: np.ndarray) -> np.ndarray:
        L = self._layout
        qpos = np.zeros(root_pos.shape[:-1] + (self.nq,))
        qpos[..., 0:3] = root_pos
        qpos[..., 3:7] = quat.to_mujoco(quat.normalize(root_rot))
        balls = quat.to_mujoco(quat.normalize(joint_rot[..., L.ball, :]))
        qpos[..., L.ball_qpos] = balls.reshape(qpos.shape[:-1] + (-1,))
        qpos[..., L.hinge_qpos] = quat.hinge_angle(joint_rot[..., L.hinge, :], L.hinge_axes)
        return qpos

    def qpos_to_pose(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MuJoCo qpos -> (root_pos, root_rot x,y,z,w, joint_rot [..., J, 4] x,y,z,w)."""
        L = self._layout
        joint_rot = quat.identity(qpos.shape[:-1] + (self.num_joints,))
        joint_rot[..., L.ball, :] = quat.from_mujoco(qpos[..., L.ball_qpos].reshape(qpos.shape[:-1] + (-1, 4)))
        joint_rot[..., L.hinge, :] = quat.from_axis_angle(L.hinge_axes, qpos[..., L.hinge_qpos])
        return qpos[..., 0:3].copy(), self.root_rotation(qpos), quat.normalize(joint_rot)

    @staticmethod
    def root_rotation(qpos: np.ndarray) -> np.ndarray:
        """MuJoCo qpos -> the root's unit rotation x,y,z,w."""
        return quat.normalize(quat.from_mujoco(qpos[..., 3:7]))

    def velocities_to_qvel(self, root_rot: np.ndarray, root_lin_vel: np.ndarray, root_ang_vel: np.ndarray,
                           dof_vel: np.ndarray) -> np.ndarray:
        """PARC velocities (root angular velocity in world axes) -> MuJoCo qvel.

        MuJoCo's free joint takes its angular velocity in the body frame; ball joint
        velocities are already local, like PARC's DOF velocities.
        """
        qvel = np.zeros(root_lin_vel.shape[:-1] + (self.nv,))
        qvel[..., 0:3] = root_lin_vel
        qvel[..., 3:6] = quat.rotate(quat.conj(quat.normalize(root_rot)), root_ang_vel)
        qvel[..., self._layout.dof_qvel] = dof_vel
        return qvel

    def parc_state(self, qpos: np.ndarray, qvel: np.ndarray) -> dict[str, np.ndarray]:
        """MuJoCo state -> PARC's simulator quantities, the inverse of pose_to_qpos/velocities_to_qvel.

        Root velocities in world axes (MuJoCo's free joint holds the angular one in the body
        frame); DOF in PARC's coordinates (a hinge's is its joint angle); DOF velocities as
        MuJoCo holds them, which for a ball joint is the angular velocity in the child
        body's frame, as in PARC.
        """
        L = self._layout
        root_rot = self.root_rotation(qpos)
        dof = np.zeros(qpos.shape[:-1] + (self.num_dof,))
        balls = quat.from_mujoco(qpos[..., L.ball_qpos].reshape(qpos.shape[:-1] + (-1, 4)))
        dof[..., L.ball_dof] = quat.quat_to_exp_map(balls).reshape(dof.shape[:-1] + (-1,))
        dof[..., L.hinge_dof] = qpos[..., L.hinge_qpos]
        return {"root_pos": qpos[..., 0:3].copy(), "root_rot": root_rot, "root_vel": qvel[..., 0:3].copy(),
                "root_ang_vel": quat.rotate(root_rot, qvel[..., 3:6]), "dof": dof,
                "dof_vel": qvel[..., L.dof_qvel]}

    # -- kinematics -------------------------------------------------------------------------
    def forward_kinematics(self, root_pos: np.ndarray, root_rot: np.ndarray,
                           joint_rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World body positions [..., B, 3] and rotations [..., B, 4] (PARC's FK)."""
        lead = root_pos.shape[:-1]
        pos = self.body_positions(root_pos, root_rot, joint_rot)
        rot = np.zeros(lead + (self.num_bodies, 4))
        rot[..., 0, :] = root_rot
        for b in range(1, self.num_bodies):
            rot[..., b, :] = quat.mul(rot[..., self.parents[b], :], joint_rot[..., b - 1, :])
        return pos, rot

    def body_positions(self, root_pos: np.ndarray, root_rot: np.ndarray, joint_rot: np.ndarray) -> np.ndarray:
        """World body positions [..., B, 3]: FK with rotation matrices, the per-step hot path,
        one batched step per level of the tree."""
        local = quat.to_matrix(joint_rot)  # [..., J, 3, 3]
        lead = root_pos.shape[:-1]
        mats = np.empty(lead + (self.num_bodies, 3, 3))
        pos = np.empty(lead + (self.num_bodies, 3))
        mats[..., 0, :, :] = quat.to_matrix(root_rot)
        pos[..., 0, :] = root_pos
        for bodies, parents in self.levels:
            parent = mats[..., parents, :, :]
            pos[..., bodies, :] = pos[..., parents, :] + (parent @ self.offsets[bodies][..., None])[..., 0]
            mats[..., bodies, :, :] = parent @ local[..., bodies - 1, :, :]
        return pos

    @cached_property
    def levels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(bodies, their parents) at each depth of the tree, root excluded: forward kinematics
        runs one batched step per level (here and in kinematics_torch)."""
        depth = np.zeros(self.num_bodies, dtype=np.int64)
        for b in range(1, self.num_bodies):
            depth[b] = depth[self.parents[b]] + 1
        return [(np.flatnonzero(depth == d), self.parents[np.flatnonzero(depth == d)])
                for d in range(1, int(depth.max()) + 1)]

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.action_low, self.action_high)

    def recorded_targets(self, action: np.ndarray) -> np.ndarray:
        """PD targets as the recorder simulates and writes them: clipped, rounded to float32 (the
        actions' dtype in rollouts.h5), in float64; so a plan simulated with them replays exactly."""
        return self.clip_action(action).astype(np.float32).astype(np.float64)
