"""Reruns across physrec upgrades: record and select rerun only when physrec.RECORDING_VERSION
or physrec.SELECTION_VERSION changes, so these must change exactly when the bytes do.

The demo is recorded and selected here and its content hashed (every array of rollouts.h5,
attempts.tsv, terrain.pkl; the selected motions' frames and terrains; not the provenance
strings that name physrec's own version). GOLDEN holds those hashes per output version and
MuJoCo version; the selected motions' hashes per recording version too, since select writes
what record recorded. A change that alters them fails this test until the version is bumped
and the new hashes are written here, which makes every user's workflow record again.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import h5py
import mujoco
import pytest

from physrec import RECORDING_VERSION, SELECTION_VERSION, config
from physrec.demo import write_demo
from physrec.formats.motion_file import read_motion_file
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.stages.index import index_dataset, read_manifest, write_manifest
from physrec.stages.record import run_record
from physrec.stages.select import run_select

GOLDEN = Path(__file__).with_name("output_versions.json")


def golden_key() -> str:
    return f"mujoco {mujoco.__version__} {platform.machine()}"


def _h5_digest(path: Path) -> str:
    h = hashlib.sha256()
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                h.update(name.encode())
                h.update(obj[()].tobytes())
        f.visititems(visit)
    return h.hexdigest()


def _motion_digest(path: Path) -> str:
    mf = read_motion_file(path)
    h = hashlib.sha256()
    for field in ("root_pos", "root_rot", "joint_rot", "body_contacts"):
        h.update(getattr(mf.motion, field).tobytes())
    h.update(mf.terrain.hf.tobytes())
    h.update(mf.terrain.min_point.tobytes())
    return h.hexdigest()


def _digests(root: Path) -> dict[str, dict[str, str]]:
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "data/dataset.yaml"}]})
    write_demo(root / "data")
    write_manifest(root / "manifest.tsv", index_dataset(root / "data" / "dataset.yaml"))
    write_plan(root / "plan.tsv", make_plan(read_manifest(root / "manifest.tsv"), 16))
    b = batch_ids(root / "plan.tsv")[0]
    record, select = root / "record", root / "select"
    run_record(root / "plan.tsv", b, cfg["record"], {"kind": "pd"}, {"name": "mujoco"}, "builtin:humanoid", 0, 1,
               record, ["physrec", "record"], progress=lambda s: None)
    run_select(record, cfg["selection"], select)
    recording = {"rollouts.h5": _h5_digest(record / "rollouts.h5")}
    for name in ("attempts.tsv", "terrain.pkl"):
        recording[name] = hashlib.sha256((record / name).read_bytes()).hexdigest()
    selection = {p.name: _motion_digest(p) for p in sorted((select / "motions").glob("*.pkl"))}
    selection["selected.tsv"] = hashlib.sha256((select / "selected.tsv").read_bytes()).hexdigest()
    return {"recording": recording, "selection": selection}


def test_recorded_bytes_change_only_with_the_output_versions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = _digests(Path("."))
    golden = json.loads(GOLDEN.read_text())
    key = golden_key()
    if key not in golden:
        pytest.skip(f"{GOLDEN.name} has no hashes for {key} (MuJoCo's results differ across versions and "
                    "processor kinds)")
    rec, sel = golden[key]["recording"], golden[key]["selection"].get(str(RECORDING_VERSION), {})
    assert str(RECORDING_VERSION) in rec, f"RECORDING_VERSION {RECORDING_VERSION} has no hashes in {GOLDEN.name}"
    assert got["recording"] == rec[str(RECORDING_VERSION)], (
        "record writes other bytes than RECORDING_VERSION's: bump physrec.RECORDING_VERSION and add the new "
        f"hashes to {GOLDEN.name}: {json.dumps(got['recording'])}")
    assert str(SELECTION_VERSION) in sel, (f"SELECTION_VERSION {SELECTION_VERSION} has no hashes for "
                                           f"RECORDING_VERSION {RECORDING_VERSION} in {GOLDEN.name}")
    assert got["selection"] == sel[str(SELECTION_VERSION)], (
        "select writes other bytes than SELECTION_VERSION's: bump physrec.SELECTION_VERSION and add the new "
        f"hashes to {GOLDEN.name}: {json.dumps(got['selection'])}")
