"""The built-in demo dataset: a few short motions on small terrains, made here from scratch.

The motions are chosen so that, under the baseline ``pd`` tracker, real physics gives
every outcome the workflow handles; which outcome each gets is decided by the simulation,
never by a label here. Measured in MuJoCo: the humanoid held at a standing pose by its
joint gains alone stands about 3.5 s before it topples, and it cannot follow a root that
slides away (nothing actuates the root).

- ``stand_flat``, ``stand_step_top``: quiet standing for 2.4 s -> success from the start.
- ``wave_flat``: standing while waving both arms -> success if the arm motion does not
  topple it.
- ``climb_step``: a step-up onto a 0.2 m step in 3.6 s (the right leg lifts over the edge
  and is placed on the step, the weight shifts onto it, the left leg follows, then it
  stands on top), made with leg IK so that the feet touch the terrain in stance and move
  at physical speeds -> ``pd`` fails from every start (it cannot move the weight onto the
  step); the ``sampling`` tracker records it at full length, within selection's default
  thresholds.
- ``ramp_descent_then_stand``: a fast glide down a ramp, then 2.2 s of quiet standing ->
  fails from the start, succeeds from a later start.
- ``glide_up_step``: the reference glides up a 0.3 m step for 3 s in a fixed standing
  pose (the root rises 0.3 m in one frame at the step's edge, straight legs): a reference
  no tracker can follow -> ``pd`` fails from every start; the ``sampling`` tracker stays
  within PARC's terminations only far from the reference, and selection rejects that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physrec.motion import quat
from physrec.formats.dataset_yaml import write_dataset
from physrec.formats.motion_file import MotionData, MotionFile, write_motion_file
from physrec.motion.terrain import Heightfield, height_at

FPS = 30
DX = 0.4
STAND_HEIGHT = 0.885  # root above the ground with straight legs (feet 0.8814 m below the root)
NUM_JOINTS, NUM_BODIES = 14, 15
# Joint indices (body index - 1) in PARC's layout.
RIGHT_SHOULDER, LEFT_SHOULDER = 2, 5
RIGHT_LEG, LEFT_LEG = (8, 9, 10), (11, 12, 13)  # hip, knee, ankle
RIGHT_FOOT, LEFT_FOOT = 11, 14  # body indices
# The builtin character's leg (assets/humanoid.xml): hip -> knee -> ankle, hips beside the root.
THIGH, SHIN, HIP_Y = 0.421546, 0.409870, 0.084887
ANKLE_HEIGHT = STAND_HEIGHT - THIGH - SHIN  # ankle above the ground in the standing pose (sole 3.6 mm above)
CLIMB_RISE = 0.2
ARMS_DOWN = np.deg2rad(75.0)


def _terrain(heights: np.ndarray, min_point: tuple[float, float]) -> Heightfield:
    hf = heights.astype(np.float32)
    # hf_maxmin left unset: the writer stores PARC's default bounds (hf + 1, hf - 1).
    return Heightfield(hf=hf, min_point=np.asarray(min_point, dtype=np.float32), dx=DX)


def flat_terrain() -> Heightfield:
    return _terrain(np.zeros((8, 8)), (-1.4, -1.4))


def step_terrain(rise: float = 0.3) -> Heightfield:
    h = np.zeros((12, 8))
    h[6:] = rise
    return _terrain(h, (-1.4, -1.4))


def ramp_terrain(drop: float = 0.05) -> Heightfield:
    """A staircase of small steps down along +x (PARC terrains are voxelised: ramps are stairs)."""
    h = np.zeros((14, 8))
    for i in range(4, 9):
        h[i:] -= drop
    return _terrain(h, (-1.4, -1.4))


def _pose(n: int, arm_wave: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Root rotations (facing +x) and joint rotations of a standing pose, arms down."""
    root_rot = quat.identity((n,))
    joint_rot = quat.identity((n, NUM_JOINTS))
    swing = np.zeros(n) if arm_wave is None else arm_wave
    joint_rot[:, RIGHT_SHOULDER] = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), ARMS_DOWN - swing)
    joint_rot[:, LEFT_SHOULDER] = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), -(ARMS_DOWN - swing))
    return root_rot, joint_rot


def _motion(xy: np.ndarray, terrain: Heightfield, arm_wave: np.ndarray | None = None) -> MotionFile:
    n = len(xy)
    z = height_at(terrain, xy) + STAND_HEIGHT
    root_pos = np.concatenate([xy, z[:, None]], axis=1)
    root_rot, joint_rot = _pose(n, arm_wave)
    contacts = np.zeros((n, NUM_BODIES))
    contacts[:, [RIGHT_FOOT, LEFT_FOOT]] = 1.0
    return _file(root_pos, root_rot, joint_rot, contacts, terrain)


def _file(root_pos: np.ndarray, root_rot: np.ndarray, joint_rot: np.ndarray, contacts: np.ndarray,
          terrain: Heightfield) -> MotionFile:
    return MotionFile(
        motion=MotionData(root_pos=root_pos.astype(np.float32), root_rot=root_rot.astype(np.float32),
                          joint_rot=joint_rot.astype(np.float32), body_contacts=contacts.astype(np.float32),
                          fps=FPS, loop_mode="CLAMP"),
        terrain=terrain, misc={"generator": "physrec builtin demo"})


def _still(x: float, y: float, seconds: float) -> np.ndarray:
    n = int(round(seconds * FPS)) + 1
    return np.tile([x, y], (n, 1)).astype(np.float64)


def _glide(start: tuple[float, float], end: tuple[float, float], seconds: float) -> np.ndarray:
    n = int(round(seconds * FPS)) + 1
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (1.0 - s) * np.asarray(start) + s * np.asarray(end)


def _smooth(times: list[float], values: list[float], t: np.ndarray) -> np.ndarray:
    """C1 piecewise cubic through keyframes (times, values), monotone between them
    (Fritsch-Carlson slopes: no overshoot), flat at the ends."""
    times_a, values_a = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    h = np.diff(times_a)
    delta = np.diff(values_a) / h
    m = np.zeros_like(values_a)
    for k in range(1, len(values_a) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            m[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    k = np.clip(np.searchsorted(times_a, t, side="right") - 1, 0, len(h) - 1)
    s = np.clip((t - times_a[k]) / h[k], 0.0, 1.0)
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * values_a[k] + h10 * h[k] * m[k] + h01 * values_a[k + 1] + h11 * h[k] * m[k + 1]


def _leg_ik(hip: np.ndarray, ankle: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hip (in world axes), knee and ankle rotations [n, 4] that put the ankle at ``ankle``
    [n, 3] with the foot flat: the leg plane rolls about x towards the ankle, then two-link IK
    (thigh, shin) in that plane, the knee bending forward; the ankle undoes both rotations."""
    x_axis, y_axis = np.eye(3)[0], np.eye(3)[1]
    d = ankle - hip
    roll = np.arctan2(d[:, 1], -d[:, 2])
    down = d[:, 1] * np.sin(roll) - d[:, 2] * np.cos(roll)  # hip to ankle in the leg plane, downwards
    fwd = d[:, 0]
    r = np.minimum(np.hypot(fwd, down), (THIGH + SHIN) * (1 - 1e-6))
    knee = np.pi - np.arccos(np.clip((THIGH**2 + SHIN**2 - r**2) / (2 * THIGH * SHIN), -1.0, 1.0))
    thigh = np.arctan2(fwd, down) + np.arccos(np.clip((THIGH**2 + r**2 - SHIN**2) / (2 * THIGH * r), -1.0, 1.0))
    shin = thigh - knee  # forward angles from the vertical
    q_hip = quat.mul(quat.from_axis_angle(x_axis, roll), quat.from_axis_angle(y_axis, -thigh))
    q_knee = quat.from_axis_angle(y_axis, knee)
    q_ankle = quat.mul(quat.from_axis_angle(y_axis, shin), quat.from_axis_angle(x_axis, -roll))
    return q_hip, q_knee, q_ankle


def _swing(t: np.ndarray, t0: float, t1: float, start: np.ndarray, end: np.ndarray, lift: float) -> np.ndarray:
    """Ankle path [n, 3] of a foot stepping from ``start`` to ``end`` between t0 and t1: it
    rises first, travels forward in the middle with ``lift`` metres of clearance, then sets
    down; it stays at ``start`` before and at ``end`` after."""
    u = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    forward = _smooth([0.0, 0.2, 0.85, 1.0], [0.0, 0.05, 0.95, 1.0], u)
    up = start[2] + (end[2] - start[2]) * _smooth([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], u) \
        + lift * _smooth([0.0, 0.35, 0.75, 1.0], [0.0, 1.0, 1.0, 0.0], u)
    return np.stack([start[0] + (end[0] - start[0]) * forward, np.full_like(u, start[1]), up], axis=-1)


def climb_step_motion(rise: float = CLIMB_RISE) -> MotionFile:
    """A step-up onto the step terrain (edge at x = 0.8 m), 3.6 s at 30 fps.

    0-0.4 s stand, ankles at x = 0.55 m (toes 0.12 m from the edge); 0.4-0.7 s shift the
    weight over the left foot, lowering a little; 0.7-1.5 s the right foot lifts, clears the
    edge by 9 cm and is placed flat on the step at x = 0.95 m (heels 0.1 m past the edge);
    1.5-2.0 s the weight moves forward and down onto the right foot, the trunk leaning
    forward (17°), until the pelvis is nearly over it while the left foot is still planted;
    2.0-2.8 s the right leg lifts the body as the left foot follows onto the step;
    2.8-3.2 s straighten; 3.2-3.6 s stand on top. The pelvis moves at up to 0.7 m/s, the
    feet at up to 1.3 m/s. Feet from leg IK: flat, on the terrain in stance (in contact in
    ``body_contacts``), in the air in swing.
    """
    n = int(round(3.6 * FPS)) + 1
    t = np.arange(n) / FPS
    x0, x1 = 0.55, 0.95  # ankles before and after
    low, high = ANKLE_HEIGHT, rise + ANKLE_HEIGHT
    feet = []
    for y, (t0, t1) in ((-HIP_Y, (0.7, 1.5)), (HIP_Y, (2.0, 2.8))):  # right leads, left follows
        feet.append(_swing(t, t0, t1, np.array([x0, y, low]), np.array([x1, y, high]), 0.1))
    keys = [0.0, 0.4, 0.7, 1.5, 2.0, 2.8, 3.2, 3.6]
    lean = 0.07  # the pelvis sideways towards the stance foot
    root_pos = np.stack([
        _smooth(keys, [x0, x0, 0.57, 0.65, 0.87, x1, x1, x1], t),
        _smooth(keys, [0.0, 0.0, lean, lean - 0.01, -lean, 0.01 - lean, 0.0, 0.0], t),
        _smooth(keys, [STAND_HEIGHT, STAND_HEIGHT, 0.86, 0.84, 0.79, STAND_HEIGHT + rise - 0.02,
                       STAND_HEIGHT + rise, STAND_HEIGHT + rise], t)], axis=-1)
    pitch = _smooth(keys, [0.0, 0.0, 0.05, 0.1, 0.3, 0.2, 0.0, 0.0], t)  # forward lean of the trunk
    _, joint_rot = _pose(n)  # arms down
    root_rot = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), pitch)
    contacts = np.zeros((n, NUM_BODIES))
    for leg, body, ankle, side in ((RIGHT_LEG, RIGHT_FOOT, feet[0], -1.0), (LEFT_LEG, LEFT_FOOT, feet[1], 1.0)):
        hip = root_pos + np.array([0.0, side * HIP_Y, 0.0])  # a pitch about y leaves the hips where they are
        q_hip, q_knee, q_ankle = _leg_ik(hip, ankle)
        joint_rot[:, leg[0]] = quat.mul(quat.conj(root_rot), q_hip)  # the IK's hip rotation is in world axes
        joint_rot[:, leg[1]], joint_rot[:, leg[2]] = q_knee, q_ankle
        contacts[:, body] = (np.abs(ankle[:, 2] - low) < 1e-9) | (np.abs(ankle[:, 2] - high) < 1e-9)
    return _file(root_pos, root_rot, joint_rot, contacts, step_terrain(rise))


# Motion name -> class (PARC's class is the first-level folder of a motion file).
DEMO_CLASSES = {"stand_flat": "flat", "stand_step_top": "step", "wave_flat": "flat", "climb_step": "step",
                "ramp_descent_then_stand": "ramp", "glide_up_step": "step"}
DEMO_NAMES = tuple(DEMO_CLASSES)


def demo_motions() -> dict[str, MotionFile]:
    flat, step, ramp = flat_terrain(), step_terrain(), ramp_terrain()
    wave_t = np.arange(int(2.4 * FPS) + 1) / FPS
    descent = np.concatenate([_glide((0.0, 0.0), (1.5, 0.0), 1.2), _still(1.5, 0.0, 2.2)[1:]])
    return {
        "stand_flat": _motion(_still(0.0, 0.0, 2.4), flat),
        "stand_step_top": _motion(_still(1.6, 0.0, 2.4), step),
        "wave_flat": _motion(_still(0.0, 0.0, 2.4), flat, arm_wave=0.6 * np.sin(2 * np.pi * 0.8 * wave_t) ** 2),
        "climb_step": climb_step_motion(),
        "ramp_descent_then_stand": _motion(descent, ramp),
        "glide_up_step": _motion(_glide((-0.6, 0.0), (1.6, 0.0), 3.0), step),
    }


def demo_motion_path(name: str) -> str:
    """Path of a demo motion relative to the demo folder."""
    return f"{DEMO_CLASSES[name]}/{name}.pkl"


def write_demo(out_dir: str | Path) -> Path:
    """Write the demo motions and their dataset YAML; returns the YAML's path."""
    out = Path(out_dir)
    entries = []
    for name, mf in demo_motions().items():
        rel = demo_motion_path(name)
        write_motion_file(out / rel, mf)
        entries.append((rel, float(mf.motion.duration)))
    yaml_path = out / "dataset.yaml"
    write_dataset(yaml_path, entries)
    return yaml_path
