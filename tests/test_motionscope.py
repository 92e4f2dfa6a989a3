"""Recorded motions open in PARC's MotionScope: each file loads the way its loader reads it
(tests/motionscope_loader.py), with the character's shapes, its recorded duration, and its
root path over its own terrain. A PARC sample loads the same way, as a check of the loader."""

from pathlib import Path

import pytest
import torch

from motionscope_loader import load_like_motionscope
from physrec import config
from physrec.formats.tables import read_tsv_records
from physrec.motion.character import Character
from physrec.stages.select import run_select
from test_replay import _record

SAMPLE = Path(__file__).parents[2] / "shared" / "parc_samples" / "sfu.pkl"


def test_every_recorded_motion_loads_as_motionscope_reads_it(tmp_path):
    ch = Character.load("builtin:humanoid")
    record = _record(tmp_path, {"kind": "pd"})
    run_select(record, config.validate({"iterations": [{"name": "i", "dataset": "d"}]})["selection"],
               tmp_path / "select")
    rows = [r for r in read_tsv_records(tmp_path / "select" / "selected.tsv") if r["recorded_file"]]
    assert len(rows) >= 3
    names = set()
    for r in rows:
        m = load_like_motionscope(str(tmp_path / "select" / "motions" / r["recorded_file"]), ch.num_joints,
                                  ch.num_bodies)
        names.add(m.name)
        assert m.fps == 30 and m.length == pytest.approx(float(r["recorded_duration"]), abs=1e-6)
        assert torch.allclose(m.root_rot.norm(dim=-1), torch.ones(1), atol=1e-5)
        assert torch.allclose(m.joint_rot.norm(dim=-1), torch.ones(1), atol=1e-5)
        assert ((m.contacts == 0) | (m.contacts == 1)).all() and m.contacts.any()  # physics' contacts: 0/1
        assert torch.isfinite(m.root_vel).all() and m.root_vel.norm(dim=-1).max() < 10
        lo = torch.tensor(m.min_point)
        hi = lo + m.dx * (torch.tensor(m.hf.shape) - 1)
        xy = m.root_pos[:, :2]
        assert (xy >= lo).all() and (xy <= hi).all(), (r["motion"], m.min_point, m.hf.shape)
        assert m.misc["physrec:source_name"] == r["motion"] and m.misc["physrec:start_time"] == float(r["start_time"])
    assert names == {Path(r["recorded_file"]).stem for r in rows}  # MotionLib's names: unique base names


def test_a_parc_sample_loads_the_same_way():
    if not SAMPLE.is_file():
        pytest.skip(f"PARC sample {SAMPLE} not available")
    ch = Character.load("builtin:humanoid")
    m = load_like_motionscope(str(SAMPLE), ch.num_joints, ch.num_bodies)
    assert m.name == "sfu" and m.root_pos.shape[0] == 15 and m.hf.shape == (32, 32)
