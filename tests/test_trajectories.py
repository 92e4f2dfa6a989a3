"""Trajectory files against ManiSkill's rules (tests/maniskill_layout.py) on small files written by
physrec's own writer, and the iteration's merged file: what is refused, what a failure leaves.
The files of real runs are checked in test_workflow.py (several batches) and test_learned_trackers.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from maniskill_layout import maniskill_load, maniskill_merge
from physrec import config
from physrec.demo import write_demo
from physrec.formats.motion_file import Limits
from physrec.formats.rollouts import (TOP_KEYS, TrajectoryError, _obs_chunks, merge_trajectories, read_episode,
                                      write_h5, write_json)
from physrec.recording.settings import RecordSettings, attempt_steps
from physrec.sim.world import PhysicsSettings
from physrec.stages.index import index_dataset

ENV_INFO = {"env_id": "physrec/TrackMotion-v0", "max_episode_steps": 30, "env_kwargs": {"seed": 0}}
COMMIT = {"physrec_version": "0.1.0", "recording_version": 4, "config_hash": "abc", "mujoco_version": "4.0.0"}


def _batch(folder: Path, steps: list[int], env_info: dict = ENV_INFO, commit: dict = COMMIT,
           obs: int | None = None) -> Path:
    """A batch's rollouts.h5/.json of attempts with `steps` control steps each (arrays of a
    recording's shapes, values that tell the attempts apart)."""
    rng = np.random.default_rng(len(steps) + sum(steps))
    h5 = [{"actions": rng.normal(size=(T, 28)), "qpos": rng.normal(size=(T + 1, 43)),
           "qvel": rng.normal(size=(T + 1, 34)), "contacts": rng.random((T + 1, 15)) > 0.5,
           "errors": rng.random((T, 4)), "ref_time": np.arange(T + 1) / 30, "terminated": T % 2 == 1,
           "success": T % 2 == 0, "obs": None if obs is None else rng.normal(size=(T + 1, obs))} for T in steps]
    eps = [{"episode_id": i, "elapsed_steps": T, "batch": folder.name, "terrain_file": "terrain.pkl",
            "recorded_by": {"physrec_version": commit["physrec_version"]}} for i, T in enumerate(steps)]
    folder.mkdir(parents=True)
    write_h5(folder / "rollouts.h5", h5)
    write_json(folder / "rollouts.json", {"env_info": env_info, "commit_info": commit, "source_type": "tracker:pd",
                                          "source_desc": "pd"}, eps)
    return folder / "rollouts.h5"


def test_every_attempt_fits_max_episode_steps():
    """env_info.max_episode_steps comes from the config (record.max_duration_s): an attempt of a
    motion no longer than that, from any start, has at most that many control steps."""
    for hz, longest in ((30, 1000.0), (30, 2.0), (7, 3.3), (60, 0.05)):
        settings = RecordSettings(physics=PhysicsSettings(control_hz=hz, physics_hz=hz), max_duration=longest)
        rng = np.random.default_rng(hz)
        length = np.r_[longest, rng.uniform(0, longest, 500)]
        t0 = length * np.r_[0.0, rng.choice([0.0, 0.1, 0.5, 0.9], 500)]
        steps = attempt_steps(length, t0, 1.0 / hz)
        assert steps.max() == steps[0] == settings.max_episode_steps, (hz, longest)
    cfg = config.validate({"iterations": [{"name": "i", "dataset": "x"}]})
    assert config.record_settings(cfg["record"]).max_episode_steps == 30000  # 1000 s at 30 Hz


def test_a_motion_longer_than_max_duration_is_invalid(tmp_path):
    dataset = write_demo(tmp_path / "demo")
    rows = index_dataset(dataset, limits=Limits(max_duration_s=2.5))
    long = [r for r in rows if r["duration"] is None]
    assert long and all(not r["valid"] and "record.max_duration_s (2.5)" in r["error"]
                        and r["error"].startswith(r["path"]) for r in long)
    assert any(r["valid"] for r in rows)


def test_observations_compressed_on_threads_read_back_as_hdf5_gzip(tmp_path):
    """write_h5 compresses observations itself, in parallel, and writes them as HDF5 chunks:
    h5py's own gzip and shuffle filters read them back exactly, edge chunks included, and the
    file's bytes do not depend on the thread count."""
    rng = np.random.default_rng(5)
    eps = [{"actions": np.zeros((n - 1, 28)), "qpos": np.zeros((n, 43)), "qvel": np.zeros((n, 34)),
            "contacts": np.zeros((n, 15), dtype=bool), "errors": np.zeros((n - 1, 4)), "ref_time": np.arange(n) / 30.0,
            "terminated": False, "success": True, "obs": rng.normal(size=(n, width)).astype(np.float32)}
           for n, width in ((1, 1312), (15, 1312), (121, 1312), (250, 1301))]
    for threads in (1, 3):
        write_h5(tmp_path / f"t{threads}.h5", eps, threads=threads)
    assert (tmp_path / "t1.h5").read_bytes() == (tmp_path / "t3.h5").read_bytes()
    edges = set()
    with h5py.File(tmp_path / "t3.h5") as f:
        for i, ep in enumerate(eps):
            d = f[f"traj_{i}/obs"]
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True)
            assert d.chunks == _obs_chunks(ep["obs"].shape)
            edges |= {axis for axis in (0, 1) if d.shape[axis] % d.chunks[axis]}
            np.testing.assert_array_equal(d[()], ep["obs"])
    assert edges == {0, 1}  # chunks cut short at the end of both axes were among them


def test_small_arrays_are_compact_and_every_array_reads_back(tmp_path):
    """An episode's small arrays are stored in their object header (compact: half HDF5's cost
    per dataset), larger ones contiguously; both read back exactly, empty ones included."""
    rng = np.random.default_rng(6)
    eps = [{"actions": rng.normal(size=(T, 28)).astype(np.float32), "qpos": rng.normal(size=(T + 1, 43)),
            "qvel": rng.normal(size=(T + 1, 34)), "contacts": rng.random((T + 1, 15)) > 0.5,
            "errors": rng.random((T, 4)).astype(np.float32), "ref_time": np.arange(T + 1) / 30.0,
            "terminated": True, "success": False, "obs": None} for T in (0, 30, 400)]
    write_h5(tmp_path / "r.h5", eps)
    layouts = set()
    with h5py.File(tmp_path / "r.h5") as f:
        for i, ep in enumerate(eps):
            for name, key in (("actions", "actions"), ("env_states/qpos", "qpos"), ("env_states/qvel", "qvel"),
                              ("body_contacts", "contacts"), ("tracking_errors", "errors"), ("ref_time", "ref_time")):
                d = f[f"traj_{i}/{name}"]
                np.testing.assert_array_equal(d[()], ep[key])
                assert d.dtype == ep[key].dtype
                layouts.add(d.id.get_create_plist().get_layout() == h5py.h5d.COMPACT)
            assert f[f"traj_{i}/terminated"][()].tolist() == [False] * (len(ep["actions"]) - 1) + [True] * bool(len(ep["actions"]))
    assert layouts == {True, False}


def test_maniskill_loads_files_with_and_without_observations(tmp_path):
    """ManiSkill's loader reads `obs` of every trajectory: an empty group or the observations; a
    file without it fails as ManiSkill's does (the emulation catches what it must)."""
    for name, obs in (("none", None), ("learned", 1312)):
        h5 = _batch(tmp_path / name, [3, 5], obs=obs)
        assert maniskill_load(h5) == 8
        assert (read_episode(h5, 1).obs is None) == (obs is None)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "none", broken)
    with h5py.File(broken / "rollouts.h5", "a") as f:
        del f["traj_1/obs"]
    with pytest.raises(KeyError):
        maniskill_load(broken / "rollouts.h5")


def test_merges_keep_every_episode_and_refuse_batches_that_disagree(tmp_path):
    """Batches that agree on env_info merge without a conflict, in ManiSkill's merge and in
    physrec's; one whose env_info differs is a conflict in ManiSkill's (which then keeps the
    first one's for all) and refused by physrec's, naming the file, leaving no merged file."""
    a, b = _batch(tmp_path / "b0", [3, 4]), _batch(tmp_path / "b1", [5])
    assert maniskill_merge([a, b], tmp_path / "ms.h5") == []
    out = tmp_path / "it" / "trajectories.h5"
    assert merge_trajectories([a, b], out) == 3
    merged = json.loads(out.with_suffix(".json").read_text())
    assert [(e["episode_id"], e["batch"], e["batch_episode_id"], e["terrain_file"]) for e in merged["episodes"]] == \
        [(0, "b0", 0, "../b0/terrain.pkl"), (1, "b0", 1, "../b0/terrain.pkl"), (2, "b1", 0, "../b1/terrain.pkl")]
    first = json.loads(a.with_suffix(".json").read_text())
    assert {k: merged[k] for k in TOP_KEYS} == {k: first[k] for k in TOP_KEYS}
    with h5py.File(out) as m, h5py.File(b) as f:
        assert m["traj_2/actions"][()].tobytes() == f["traj_0/actions"][()].tobytes()
        assert m["traj_2/obs"].keys() == f["traj_0/obs"].keys() == set()

    other = _batch(tmp_path / "b2", [2], env_info={**ENV_INFO, "max_episode_steps": 99})
    conflicts = maniskill_merge([a, other], tmp_path / "ms2.h5")
    assert len(conflicts) == 1 and "key env_info" in conflicts[0] and "b2" in conflicts[0]
    out.unlink()
    out.with_suffix(".json").unlink()
    with pytest.raises(TrajectoryError, match=r"b2/rollouts.json: env_info differs from .*b0/rollouts.json"):
        merge_trajectories([a, other], out)
    assert not any(out.parent.iterdir())


def test_batches_of_other_software_merge_with_a_warning(tmp_path):
    """commit_info may differ (a batch recorded by an earlier physrec is reused): the merged file
    keeps the first one's, as ManiSkill's merge does, and each episode its own recorded_by."""
    a = _batch(tmp_path / "b0", [3])
    b = _batch(tmp_path / "b1", [4], commit={**COMMIT, "physrec_version": "0.0.9"})
    said: list[str] = []
    assert merge_trajectories([a, b], tmp_path / "t.h5", said.append) == 2
    assert len(said) == 1 and "b1/rollouts.json" in said[0]
    merged = json.loads((tmp_path / "t.json").read_text())
    assert merged["commit_info"] == COMMIT
    assert [e["recorded_by"]["physrec_version"] for e in merged["episodes"]] == ["0.1.0", "0.0.9"]


def test_a_merge_that_fails_midway_leaves_nothing(tmp_path):
    """A JSON naming an attempt its rollouts.h5 lacks: the merge fails there, naming the file, and
    neither the merged file nor a temporary one is left for a rerun to trust."""
    a, b = _batch(tmp_path / "b0", [3]), _batch(tmp_path / "b1", [4, 2])
    with h5py.File(b, "a") as f:
        del f["traj_1"]
    out = tmp_path / "it" / "trajectories.h5"
    with pytest.raises(TrajectoryError, match=r"b1/rollouts.h5: has no traj_1, which .*b1/rollouts.json names"):
        merge_trajectories([a, b], out)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_a_cut_short_rollouts_file_is_named(tmp_path):
    from physrec.formats.rollouts import open_rollouts
    path = tmp_path / "rollouts.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(100_000))
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(TrajectoryError, match=r"rollouts.h5: not a readable HDF5 file .*record.* again"):
        open_rollouts(path)
