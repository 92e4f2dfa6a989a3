"""The built-in demo dataset: a few short motions on small terrains, made here from scratch.

The motions are chosen so that, under the baseline ``pd`` tracker, real physics gives
every outcome the workflow handles; which outcome each gets is decided by the simulation,
never by a label here. Measured in MuJoCo: the humanoid held at a standing pose by its
joint gains alone stands about 3.5 s before it topples, and it cannot follow a root that
slides away (nothing actuates the root).

- ``stand_flat``, ``stand_step_top``: quiet standing for 2.4 s -> success from the start.
- ``wave_flat``: standing while waving both arms -> success if the arm motion does not
  topple it.
- ``climb_step``: the reference glides up a 0.3 m step for 3 s -> fails from every start.
- ``ramp_descent_then_stand``: a fast glide down a ramp, then 2.2 s of quiet standing ->
  fails from the start, succeeds from a later start.
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
    contacts[:, [11, 14]] = 1.0  # feet
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


# Motion name -> class (PARC's class is the first-level folder of a motion file).
DEMO_CLASSES = {"stand_flat": "flat", "stand_step_top": "step", "wave_flat": "flat", "climb_step": "step",
                "ramp_descent_then_stand": "ramp"}
DEMO_NAMES = tuple(DEMO_CLASSES)


def demo_motions() -> dict[str, MotionFile]:
    flat, step, ramp = flat_terrain(), step_terrain(), ramp_terrain()
    wave_t = np.arange(int(2.4 * FPS) + 1) / FPS
    descent = np.concatenate([_glide((0.0, 0.0), (1.5, 0.0), 1.2), _still(1.5, 0.0, 2.2)[1:]])
    return {
        "stand_flat": _motion(_still(0.0, 0.0, 2.4), flat),
        "stand_step_top": _motion(_still(1.6, 0.0, 2.4), step),
        "wave_flat": _motion(_still(0.0, 0.0, 2.4), flat, arm_wave=0.6 * np.sin(2 * np.pi * 0.8 * wave_t) ** 2),
        "climb_step": _motion(_glide((-0.6, 0.0), (1.6, 0.0), 3.0), step),
        "ramp_descent_then_stand": _motion(descent, ramp),
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
