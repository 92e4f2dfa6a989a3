"""Motion files for tests: a dataset of good motions plus every kind of broken PARC file.

Shared by test_indexing.py and test_workflow.py (pytest puts tests/ on sys.path).
"""

import os
import pickle
from pathlib import Path

import numpy as np

from physrec.formats.dataset_yaml import write_dataset
from physrec.demo import demo_motions
from physrec.formats.motion_file import MotionData, MotionFile, write_motion_file
from physrec.formats.safe_pickle import parc_dumps


class _Exploit:
    """Pickles to os.system(<touch marker>): loading it with plain pickle would create the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fields(m: MotionData) -> dict:
    return {"root_pos": m.root_pos, "root_rot": m.root_rot, "joint_rot": m.joint_rot,
            "body_contacts": m.body_contacts, "fps": m.fps, "loop_mode": m.loop_mode}


def _terrain_bytes(mf: MotionFile) -> bytes:
    t = mf.terrain
    return parc_dumps({"hf": t.hf, "hf_maxmin": t.hf_maxmin, "min_point": t.min_point, "dx": t.dx})


def _raw(path: Path, motion: dict | None, mf: MotionFile, terrain=True) -> Path:
    """A PARC-layout file written with plain pickle (for contents write_motion_file would refuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    outer = {"motion_data": pickle.dumps(motion), "terrain_data": _terrain_bytes(mf) if terrain else None,
             "misc_data": None}
    path.write_bytes(pickle.dumps(outer))
    return path


def build_bad_dataset(root: Path, marker: Path) -> dict[str, Path]:
    """Good motions plus one of each kind of bad one; returns name -> path (the YAML is root/dataset.yaml)."""
    demo = demo_motions()
    good = demo["stand_flat"]
    files: dict[str, Path] = {}

    def add(name, path):
        files[name] = path
        return path

    write_motion_file(add("good", root / "a" / "good.pkl"), good)
    write_motion_file(add("good_wave", root / "a" / "good_wave.pkl"), demo["wave_flat"])
    add("missing", root / "a" / "missing.pkl")  # listed, never written
    full = (root / "a" / "good.pkl").read_bytes()
    add("truncated", root / "b" / "truncated.pkl").parent.mkdir(parents=True, exist_ok=True)
    files["truncated"].write_bytes(full[: len(full) // 2])
    # Malicious: the whole file, and (separately) just its motion_data, reduce to os.system.
    add("malicious", root / "b" / "malicious.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    inner = {"motion_data": pickle.dumps(_Exploit(marker)), "terrain_data": _terrain_bytes(good), "misc_data": None}
    add("malicious_inner", root / "b" / "malicious_inner.pkl").write_bytes(pickle.dumps(inner))
    nan = _fields(good.motion)
    nan["root_pos"] = nan["root_pos"].copy()
    nan["root_pos"][7, 2] = np.nan
    _raw(add("nan_frame", root / "b" / "nan_frame.pkl"), nan, good)
    bad_shape = _fields(good.motion)
    bad_shape["joint_rot"] = bad_shape["joint_rot"][:, :13]
    _raw(add("bad_shape", root / "b" / "bad_shape.pkl"), bad_shape, good)
    one = _fields(good.motion)
    one = {k: (v[:1] if isinstance(v, np.ndarray) else v) for k, v in one.items()}
    _raw(add("one_frame", root / "b" / "one_frame.pkl"), one, good)
    _raw(add("no_terrain", root / "b" / "no_terrain.pkl"), _fields(good.motion), good, terrain=False)
    # Same basename as a/good.pkl, in another folder.
    write_motion_file(add("good_dup", root / "c" / "good.pkl"), demo["stand_step_top"])
    entries = [(str(p.relative_to(root)), 1.0) for p in files.values()]
    write_dataset(root / "dataset.yaml", entries)
    return files
