"""A recorded motion read as PARC's MotionScope reads the files it is configured with (facts from
PARC's source, as of PARC's README's MotionScope section; this is not PARC's code).

MotionScope loads each configured file with PARC's `load_ms_file` and builds a MotionLib
from it: the outer pickle holds `motion_data`, `terrain_data` and `misc_data`, each pickled
on its own; the first two become dataclasses with exactly these fields (a missing or extra
key is a TypeError there); arrays become float32 torch tensors; MotionLib looks the loop
mode up by name, asserts equal frame counts, takes root velocities by forward differences
(two frames at least) and names the motion after the file's base name; the terrain becomes
a SubTerrain from the heightfield's shape, its min_point and dx.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

MOTION_FIELDS = ("root_pos", "root_rot", "joint_rot", "body_contacts", "fps", "loop_mode")
TERRAIN_FIELDS = ("hf", "hf_maxmin", "min_point", "dx")
LOOP_MODES = ("CLAMP", "WRAP")


@dataclass
class LoadedMotion:
    name: str
    fps: float
    length: float
    root_pos: torch.Tensor
    root_rot: torch.Tensor
    joint_rot: torch.Tensor
    contacts: torch.Tensor
    root_vel: torch.Tensor
    hf: torch.Tensor
    min_point: tuple[float, float]
    dx: float
    misc: dict


def _fields(d: dict, names: tuple[str, ...], what: str) -> dict:
    if set(d) != set(names):  # PARC's dataclass(**d) raises TypeError here
        raise TypeError(f"{what}: keys {sorted(d)} are not exactly {sorted(names)}")
    return d


def load_like_motionscope(path: str, num_joints: int, num_bodies: int) -> LoadedMotion:
    # PARC unpickles with plain pickle; these are files the test itself just recorded.
    with open(path, "rb") as f:
        outer = pickle.load(f)
    motion = _fields(pickle.loads(outer["motion_data"]), MOTION_FIELDS, "motion_data")
    terrain = _fields(pickle.loads(outer["terrain_data"]), TERRAIN_FIELDS, "terrain_data")
    misc = pickle.loads(outer["misc_data"]) if outer.get("misc_data") is not None else {}
    t = {k: torch.from_numpy(motion[k]).to(torch.float32) for k in ("root_pos", "root_rot", "joint_rot",
                                                                     "body_contacts")}
    n = t["root_pos"].shape[0]
    assert n == t["root_rot"].shape[0] == t["joint_rot"].shape[0], "frame counts differ"
    assert t["root_pos"].shape == (n, 3) and t["root_rot"].shape == (n, 4)
    assert t["joint_rot"].shape == (n, num_joints, 4) and t["body_contacts"].shape == (n, num_bodies)
    assert motion["loop_mode"] in LOOP_MODES, motion["loop_mode"]
    fps = float(motion["fps"])
    root_vel = torch.zeros_like(t["root_pos"])
    root_vel[:-1] = fps * (t["root_pos"][1:] - t["root_pos"][:-1])
    root_vel[-1] = root_vel[-2]  # IndexError with a single frame, as in MotionLib
    hf = torch.from_numpy(np.asarray(terrain["hf"])).to(torch.float32)
    hf_maxmin = torch.from_numpy(np.asarray(terrain["hf_maxmin"])).to(torch.float32)
    assert hf.ndim == 2 and hf_maxmin.shape[:2] == hf.shape
    min_point = np.asarray(terrain["min_point"])
    return LoadedMotion(os.path.basename(os.path.splitext(path)[0]), fps, (n - 1) / fps, t["root_pos"],
                        t["root_rot"], t["joint_rot"], t["body_contacts"], root_vel, hf,
                        (float(min_point[0]), float(min_point[1])), float(terrain["dx"]), misc)
