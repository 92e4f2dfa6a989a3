"""Learned trackers: PARC checkpoints and exported programs, loaded safely, recorded with real physics.

Checkpoints here are PARC's exact key layout with random weights (small widths keep them fast);
the exported program turns the observation's first target frame back into PD targets, so it must
record what `pd` records, through the real Snakemake workflow.
"""

import json
import os
import pickle
import re
from types import SimpleNamespace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from first_target_policy import FirstTargetFrame
from maniskill_layout import check_layout, maniskill_load
from snakemake_project import IT, REPO, base_config, make_project, snakemake
from physrec import config
from physrec.demo import write_demo
from physrec.formats.tables import read_tsv_records
from physrec.motion import quat
from physrec.recording.batch import record_batch
from physrec.recording.plan import build_reference
from physrec.recording.settings import RecordSettings
from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
from physrec.stages.index import index_dataset, read_manifest, write_manifest
from physrec.stages.record import run_record
from physrec.trackers.base import TrackerError, make_tracker
from physrec.trackers.parc_policy import random_state_dict

SMALL = (64, 32, 16)


def _checkpoint(path: Path, widths=SMALL, edit: dict | None = None) -> Path:
    """A PARC-layout checkpoint; `edit` replaces entries (None deletes one)."""
    state = random_state_dict(1312, 28, widths, seed=1)
    for key, value in (edit or {}).items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, path)
    return path


def _export(module: torch.nn.Module, path: Path, size: int = 1312) -> Path:
    n = torch.export.Dim("n", min=1)
    torch.export.save(torch.export.export(module, (torch.zeros(2, size),), dynamic_shapes={"obs": {0: n}}), path)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PHYSREC_TEST_MARKER']}",))


# -- PARC checkpoints ---------------------------------------------------------------------------------
def test_parc_checkpoint_action_is_the_gaussian_mean(tmp_path, ch):
    path = _checkpoint(tmp_path / "model.pt")
    tracker = make_tracker({"kind": "parc", "model": str(path)}, ch)
    assert tracker.policy.widths == list(SMALL) and tracker.observation == "parc" and tracker.max_horizon == 1
    assert str(path) in tracker.describe() and "64x32x16" in tracker.describe()
    s = {k: v.double().numpy() for k, v in torch.load(path, weights_only=True).items()}
    obs = np.random.default_rng(0).normal(size=(5, 1312)) * 3
    x = np.clip((obs - s["_obs_norm._mean"]) / s["_obs_norm._std"], -10, 10)
    for i in (0, 2, 4):
        x = np.maximum(0, x @ s[f"_model._actor_layers.{i}.weight"].T + s[f"_model._actor_layers.{i}.bias"])
    want = (x @ s["_model._action_dist._mean_net.weight"].T + s["_model._action_dist._mean_net.bias"]) \
        * s["_a_norm._std"] + s["_a_norm._mean"]
    got = tracker.policy(torch.as_tensor(obs, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("edit, message", [
    ({"_model._action_dist._mean_net.w": torch.zeros(28, 16)}, "unexpected key '_model._action_dist._mean_net.w'"),
    ({"_obs_norm._std": None}, "missing key _obs_norm._std"),
    ({"_obs_norm._mean": torch.zeros(1000)}, "_obs_norm._mean has shape (1000,), expected (1312,)"),
    ({"_model._actor_layers.2.weight": torch.zeros(32, 60)},
     "_model._actor_layers.2.weight has shape (32, 60), expected (32, 64)"),
    ({"_a_norm._std": torch.full((28,), float("nan"))}, "_a_norm._std has non-finite values"),
    ({"_model._actor_layers.0.weight": None}, "missing key _model._actor_layers.0.weight"),
    ({"_model._actor_layers.1.weight": torch.zeros(8, 16)}, "actor layers [0, 1, 2, 4] are not PARC's layout"),
])
def test_bad_checkpoints_name_the_file_and_the_first_mismatch(tmp_path, ch, edit, message):
    path = _checkpoint(tmp_path / "model.pt", edit=edit)
    with pytest.raises(TrackerError, match=re.escape(f"{path}: {message}")):
        make_tracker({"kind": "parc", "model": str(path)}, ch)


def test_unreadable_and_hostile_checkpoints_are_refused(tmp_path, ch, monkeypatch):
    good = _checkpoint(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    marker = tmp_path / "code_ran"
    monkeypatch.setenv("PHYSREC_TEST_MARKER", str(marker))
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"_obs_norm._count": _Evil()}))
    a_list = tmp_path / "list.pt"
    torch.save([1, 2, 3], a_list)
    cases = [(tmp_path / "absent.pt", "model file not found"), (truncated, "not a readable PyTorch file"),
             (hostile, "refused: it holds pickled objects other than tensors"),
             (a_list, "not a PARC tracker checkpoint: holds a list, expected a state_dict")]
    for path, message in cases:
        with pytest.raises(TrackerError, match=re.escape(f"{path}: {message}")):
            make_tracker({"kind": "parc", "model": str(path)}, ch)
    assert not marker.exists(), "loading a checkpoint ran code"


def test_a_bad_checkpoint_fails_the_record_job_before_simulating(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_demo("data")
    write_manifest("manifest.tsv", index_dataset("data/dataset.yaml"))
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    rec = config.validate({"iterations": [{"name": "i", "dataset": "x"}]})["record"]
    with pytest.raises(TrackerError, match="model.pt: not a readable PyTorch file"):
        run_record("plan.tsv", batch_ids("plan.tsv")[0], rec, {"kind": "parc", "model": "model.pt"}, {"name": "mujoco"},
                   "builtin:humanoid", 0, 1, "out", ["physrec"], progress=lambda s: None)
    assert not (tmp_path / "out").exists()


# -- exported programs --------------------------------------------------------------------------------
def test_docs_export_example_gives_a_working_tracker(tmp_path, ch, monkeypatch):
    text = (REPO / "docs" / "trackers.md").read_text()
    m = re.search(r"<!-- tested: export-policy -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/trackers.md lost its tested export example"
    monkeypatch.chdir(tmp_path)
    exec(compile(m.group(1), "docs/trackers.md", "exec"), {})
    tracker = make_tracker({"kind": "exported", "model": "policy.pt2", "observation": "parc"}, ch)
    out = tracker.policy(torch.zeros(1, 1312))
    assert out.shape == (1, 28)


def test_an_exported_program_moves_whole_to_the_tracker_device(tmp_path, ch):
    """Tensors a program makes in its forward are constants of the exported graph; they
    must move with the weights, or a policy on the GPU fails on its first call."""
    from physrec.trackers.exported import load_program
    path = tmp_path / "policy.pt2"
    torch.export.save(torch.export.export(FirstTargetFrame(ch), (torch.zeros(2, 1312),)), path)
    module = load_program(path, "meta")  # a device other than the CPU that every machine has
    tensors = {k: v for k in dir(module) if isinstance(v := getattr(module, k, None), torch.Tensor)}
    tensors.update(module.state_dict())
    assert tensors and all(t.device.type == "meta" for t in tensors.values()), \
        {k: t.device for k, t in tensors.items()}
    assert module(torch.zeros(2, 1312, device="meta")).device.type == "meta"


def test_exported_archives_with_code_are_refused(tmp_path, ch, monkeypatch):
    import zipfile
    good = _export(FirstTargetFrame(ch), tmp_path / "good.pt2")
    marker = tmp_path / "code_ran"
    monkeypatch.setenv("PHYSREC_TEST_MARKER", str(marker))
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = pickle.dumps(_Evil()) if "sample_inputs" in info.filename else zin.read(info.filename)
            zout.writestr(info, data)
    with pytest.raises(TrackerError, match=re.escape(str(bad)) + r" \[data/sample_inputs/.*\]: refused"):
        make_tracker({"kind": "exported", "model": str(bad), "observation": "parc"}, ch)
    assert not marker.exists(), "loading an exported program ran code"
    not_zip = tmp_path / "plain.pt2"
    not_zip.write_bytes(b"hello")
    with pytest.raises(TrackerError, match="plain.pt2: not a torch.export archive"):
        make_tracker({"kind": "exported", "model": str(not_zip), "observation": "parc"}, ch)


def test_exported_program_with_the_wrong_output_is_refused(tmp_path, ch):
    class Wrong(torch.nn.Module):
        def forward(self, obs):
            return obs[:, :20]
    path = _export(Wrong(), tmp_path / "wrong.pt2")
    with pytest.raises(TrackerError, match=r"wrong.pt2: maps a \[2, 1312\] observation to \(2, 20\), expected \(2, 28\)"):
        make_tracker({"kind": "exported", "model": str(path), "observation": "parc"}, ch)


def test_a_policy_returning_nan_ends_only_those_attempts(tmp_path, ch, demo_batch):
    class NaNWhereTheRootTravels(torch.nn.Module):
        """Finite on the all-zero probe and for motions that stay put; NaN where the reference
        root is more than 0.3 m away one second ahead (the last target frame's root, 661:664)."""
        def forward(self, obs):
            travels = obs[:, 661:664].abs().sum(-1, keepdim=True) > 0.3
            return torch.where(travels, float("nan"), 0.0).expand(-1, 28)
    tracker = make_tracker({"kind": "exported", "model": str(_export(NaNWhereTheRootTravels(), tmp_path / "nan.pt2")),
                            "observation": "parc"}, ch)
    rec = record_batch(demo_batch, ch, tracker, RecordSettings(start_fractions=()))
    reasons = {demo_batch[a.motion].name: a.fail_reason for a in rec.attempts}
    assert "non_finite_action" in reasons.values()
    assert set(reasons.values()) != {"non_finite_action"}, reasons  # the others went on
    for a in rec.attempts:
        assert np.isfinite(a.qpos).all() and np.isfinite(a.actions).all()


# -- recording with a learned tracker ------------------------------------------------------------------
def test_observations_are_recorded_from_the_simulated_state(tmp_path_factory, ch, demo_batch):
    """At the reset frame the simulator holds the reference pose and velocities: the recorded
    observation's character part must be that state seen through PARC's conversions."""
    path = _checkpoint(tmp_path_factory.mktemp("ck") / "model.pt")
    rec = record_batch(demo_batch, ch, make_tracker({"kind": "parc", "model": str(path)}, ch),
                       RecordSettings(start_fractions=()))
    ref = build_reference(ch, demo_batch)
    for a in rec.attempts:
        assert a.obs.shape == (a.steps + 1, 1312) and a.obs.dtype == np.float32
        m = np.array([a.motion])
        pose, vel = ref.pose(m, np.zeros(1)), ref.velocity(m, np.zeros(1))
        heading = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), -quat.heading(pose.root_rot))
        np.testing.assert_allclose(a.obs[0, 6:9], quat.rotate(heading, vel.root_lin_vel)[0], atol=1e-5)
        np.testing.assert_allclose(a.obs[0, 9:12], quat.rotate(heading, vel.root_ang_vel)[0], atol=1e-5)
        np.testing.assert_allclose(a.obs[0, 96:124], vel.dof_vel[0], atol=1e-5)
        # The first target frame's root is the reference root one control step ahead.
        ahead = ref.pose(m, np.array([1 / 30]))
        np.testing.assert_allclose(a.obs[0, 136:139], quat.rotate(heading, ahead.root_pos - pose.root_pos)[0],
                                   atol=1e-5)


def test_recorded_observations_equal_parcs_own_path(tmp_path, ch, demo_batch):
    """The recorder reuses its termination kinematics and looks target frames up 8 steps at
    a time; recomputing each frame from the saved state through the plain PARC path (FK
    from the DOF, targets at the frame's own time) must give the same observation."""
    from physrec.observations.parc import CharacterState, Observation
    path = _checkpoint(tmp_path / "model.pt")
    batch = demo_batch[:3]
    rec = record_batch(batch, ch, make_tracker({"kind": "parc", "model": str(path)}, ch),
                       RecordSettings(start_fractions=(0.3,)))
    layout = Observation(ch, [m.motion for m in batch], [m.terrain for m in batch])
    for a in rec.attempts:
        arrays = ch.parc_state(a.qpos, a.qvel)
        arrays["root_pos"][:, :2] -= rec.tiled.offsets[a.motion]
        arrays["contacts"] = a.contacts
        ids = torch.full((len(a.qpos),), a.motion)
        time = layout.motion_time(ids, a.start_fraction, torch.arange(len(a.qpos), dtype=torch.int32))
        plain = layout.compute(CharacterState.from_arrays(arrays), ids, time).numpy()
        diff = np.abs(plain - a.obs)
        assert diff[:, 124:136].max() < 5e-5 and diff[:, 136:766].max() < 5e-5  # key bodies, target frames
        diff[:, 124:136] = diff[:, 136:766] = 0
        assert diff.max() < 1e-5


def _record_twice(tmp_path, spec, save_obs=True):
    os.chdir(tmp_path)
    write_demo("data")
    write_manifest("manifest.tsv", index_dataset("data/dataset.yaml"))
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
    b = batch_ids("plan.tsv")[0]
    rec = config.validate({"iterations": [{"name": "i", "dataset": "x"}], "record": {"save_obs": save_obs}})["record"]
    for out in ("one", "two"):
        run_record("plan.tsv", b, rec, spec, {"name": "mujoco"}, "builtin:humanoid", 0, 2, out, ["physrec"], progress=lambda s: None)
    return tmp_path / "one", tmp_path / "two"


def test_learned_tracker_recording_is_byte_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"kind": "parc", "model": str(_checkpoint(tmp_path / "model.pt", widths=(256, 128, 64)))}
    one, two = _record_twice(tmp_path, spec)
    for f in ("rollouts.h5", "rollouts.json", "attempts.tsv", "terrain.pkl", "record_env.yaml"):
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    with h5py.File(one / "rollouts.h5") as h5:
        g = h5["traj_0"]
        assert g["obs"].dtype == np.float32 and g["obs"].shape == (len(g["actions"]) + 1, 1312)
        assert g["obs"].compression == "gzip"
    info = check_layout(one / "rollouts.h5", obs_size=1312)
    assert info["source_type"] == "tracker:parc" and "model.pt" in info["source_desc"]
    assert maniskill_load(one / "rollouts.h5") == sum(ep["elapsed_steps"] for ep in info["episodes"])


def test_save_obs_off_writes_no_observations(tmp_path, monkeypatch, ch):
    """Without observations each attempt's `obs` is an empty group, as ManiSkill's obs_mode "none" writes."""
    monkeypatch.chdir(tmp_path)
    path = _export(FirstTargetFrame(ch), tmp_path / "p.pt2")
    one, _ = _record_twice(tmp_path, {"kind": "exported", "model": str(path), "observation": "parc"}, save_obs=False)
    check_layout(one / "rollouts.h5", obs_size=None)


# -- end to end through Snakemake ----------------------------------------------------------------------
SHARED = REPO.parent / "shared" / "parc_samples"


def test_learned_trackers_record_through_snakemake(tmp_path, ch):
    """One workflow, three iterations: pd and the first-target-frame exported policy on the demo
    (same outcomes), and PARC's own checkpoint on PARC's sample motions (where ../shared has them)."""
    project = tmp_path / "project"
    project.mkdir()
    _export(FirstTargetFrame(ch), project / "policy.pt2")
    cfg = base_config("builtin:demo")
    base = "results/builtin_demo/dataset.yaml"  # not the other iteration's output: its names would clash
    cfg["iterations"] = [{"name": IT, "dataset": "builtin:demo", "tracker": {"kind": "pd"}, "base_dataset": base},
                         {"name": "exported", "dataset": "builtin:demo", "base_dataset": base,
                          "tracker": {"kind": "exported", "model": "policy.pt2", "observation": "parc"}}]
    with_parc = (SHARED / "oracle" / "model_seed1.pt").is_file()
    if with_parc:
        (project / "parc.yaml").write_text(yaml.safe_dump(
            {"motions": [{"file": str(SHARED / f"{m}.pkl"), "weight": 1.0} for m in ("TEASER_TERRAIN", "sfu")]}))
        cfg["iterations"].append({"name": "parc", "dataset": "parc.yaml", "base_dataset": base,
                                  "tracker": {"kind": "parc", "model": str(SHARED / "oracle" / "model_seed1.pt")}})
    make_project(project, cfg)
    snakemake(project)

    def outcomes(it):
        rows = read_tsv_records(project / "results" / it / "manifest.tsv")
        return {r["name"]: (r["status"], r["start_fraction"], r["recorded_duration"]) for r in rows}

    pd, exported = outcomes(IT), outcomes("exported")
    assert pd == exported
    assert {s for s, _, _ in pd.values()} >= {"recorded", "recorded_later_start", "failed"}
    summary = json.loads((project / "results" / "exported" / "summary.json").read_text())
    assert summary["motions"]["recorded"] == 4
    record_dir = next((project / "results" / "exported" / "record").iterdir())
    assert yaml.safe_load((record_dir / "record_env.yaml").read_text())["tracker"]["kind"] == "exported"
    if not with_parc:
        pytest.skip(f"PARC's checkpoint absent from {SHARED} (../shared not mounted): the parc iteration was not run")
    # PARC's checkpoint is untrained (its actions are not a tracker's): the motions fail, but are recorded
    # as attempts with the observations the policy saw.
    assert set(outcomes("parc")) == {"TEASER_TERRAIN", "sfu"}
    record_dir = next((project / "results" / "parc" / "record").iterdir())
    info = json.loads((record_dir / "rollouts.json").read_text())
    assert info["source_type"] == "tracker:parc"
    with h5py.File(record_dir / "rollouts.h5") as h5:
        assert all(h5[k]["obs"].shape[1] == 1312 for k in h5)


SHARED = REPO.parent / "shared" / "parc_samples"


@pytest.mark.skipif(not (SHARED / "oracle" / "model_seed1.pt").is_file(), reason="needs ../shared/parc_samples")
def test_a_learned_tracker_records_the_same_bytes_on_any_thread_count(tmp_path, monkeypatch, ch):
    """PARC's checkpoint on 48 copies each of TEASER_TERRAIN and civilization in one batch (large
    matrices, where a multi-threaded kernel may sum in another order): record.threads 1, 2 and 4
    give the same files. And the policy alone, on 96 rows, gives the same bits on 1, 2 and 4 threads."""
    from physrec.formats.dataset_yaml import write_dataset
    from physrec.trackers.policy import limit_torch_threads
    monkeypatch.chdir(tmp_path)
    names = [f"m{i:02d}_{j}" for i in range(48) for j in ("TEASER_TERRAIN", "civilization")]
    (tmp_path / "data").mkdir()
    for n in names:
        os.symlink(SHARED / f"{n.split('_', 1)[1]}.pkl", tmp_path / "data" / f"{n}.pkl")
    write_dataset("data/dataset.yaml", [(f"{n}.pkl", 1.0) for n in names])
    write_manifest("manifest.tsv", index_dataset("data/dataset.yaml"))
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 100000))
    (b,) = batch_ids("plan.tsv")
    rec = config.validate({"iterations": [{"name": "i", "dataset": "x"}], "record": {"save_obs": False}})["record"]
    spec = {"kind": "parc", "model": str(SHARED / "oracle" / "model_seed1.pt")}
    for threads in (1, 2, 4):
        run_record("plan.tsv", b, rec, spec, {"name": "mujoco"}, "builtin:humanoid", 0, threads, f"t{threads}",
                   ["physrec"], progress=lambda s: None)
    for f in ("rollouts.h5", "attempts.tsv"):
        assert (tmp_path / "t1" / f).read_bytes() == (tmp_path / "t2" / f).read_bytes() == \
               (tmp_path / "t4" / f).read_bytes(), f
    tracker = make_tracker(spec, ch)
    obs = torch.randn(96, 1312, generator=torch.Generator().manual_seed(0)) * 3
    outs = []
    for threads in (1, 2, 4):
        limit_torch_threads(threads)
        tracker.use_threads(threads)
        outs.append(tracker.act(SimpleNamespace(obs=obs)))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_a_steps_own_work_in_slices_on_threads_records_the_same_attempts(tmp_path, monkeypatch, ch):
    """The recorder's own work after each simulator call (kinematics, termination, buffers,
    observation) in slices of 1 row on 3 threads, with 38 copies of the demo's motions (more than
    a vectorised block of 32, where the heading's atan2 rounds otherwise): the attempts of one
    slice on 1 thread, bit for bit, observations included."""
    from physrec.demo import demo_motions
    from physrec.recording import host_pass
    from physrec.recording.data import BatchMotion
    from physrec.sim.backend import BackendSpec
    tracker = make_tracker({"kind": "parc", "model": str(_checkpoint(tmp_path / "model.pt"))}, ch)
    batch = [BatchMotion(f"{n}_{i}", mf.motion, mf.terrain) for i in range(6) for n, mf in demo_motions().items()]
    batch = batch[:38]
    settings = RecordSettings(save_obs=True)
    whole = record_batch(batch, ch, tracker, settings, BackendSpec(threads=1))
    monkeypatch.setattr(host_pass, "MIN_SLICE_ROWS", 1)
    slices = []
    real = host_pass.HostPass._slices
    monkeypatch.setattr(host_pass.HostPass, "_slices", lambda self, m: slices.append(real(self, m)) or slices[-1])
    cut = record_batch(batch, ch, tracker, settings, BackendSpec(threads=3))
    assert max(len(s) for s in slices) == 3
    assert len(whole.attempts) == len(cut.attempts) > len(batch)
    for a, b in zip(whole.attempts, cut.attempts):
        assert (a.motion, a.start_fraction, a.steps, a.fail_reason) == (b.motion, b.start_fraction, b.steps, b.fail_reason)
        for k in ("qpos", "qvel", "actions", "errors", "obs"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k


@pytest.mark.parametrize("kind", ["exported", "parc"])
def test_passes_cut_to_the_memory_budget_record_the_same_attempts(tmp_path, monkeypatch, ch, kind):
    """A pass's environments in groups whose dense buffers fit a budget (here so small that most
    groups hold one motion): the same attempts, bit for bit, as one group, with a learned tracker
    that saves its observations; the buffers of the largest group shrink accordingly."""
    from physrec.demo import demo_motions
    from physrec.recording import memory
    from physrec.recording.data import BatchMotion
    spec = {"kind": "exported", "model": str(_export(FirstTargetFrame(ch), tmp_path / "p.pt2")), "observation": "parc"}
    if kind == "parc":  # matrix products: a row's bits must not depend on its chunk's other rows
        spec = {"kind": "parc", "model": str(_checkpoint(tmp_path / "model.pt", widths=(256, 128, 64)))}
    tracker = make_tracker(spec, ch)
    batch = [BatchMotion(n, mf.motion, mf.terrain) for n, mf in demo_motions().items()]
    settings = RecordSettings(save_obs=True)
    whole = record_batch(batch, ch, tracker, settings)
    frame = memory.frame_bytes(1312)
    monkeypatch.setattr(memory, "PASS_BUDGET_BYTES", 120 * frame)  # 120 frames: one 2.4-s motion (73)
    groups = []
    real = memory.pass_groups
    monkeypatch.setattr("physrec.recording.batch.pass_groups",
                        lambda *a, **k: groups.append(real(*a, **k)) or groups[-1])
    cut = record_batch(batch, ch, tracker, settings)
    assert max(len(g) for gs in groups for g in gs) == 1 and len(groups[0]) == len(batch)
    assert len(whole.attempts) == len(cut.attempts) > len(batch)
    for a, b in zip(whole.attempts, cut.attempts):
        assert (a.motion, a.start_fraction, a.steps, a.fail_reason) == (b.motion, b.start_fraction, b.steps, b.fail_reason)
        for k in ("qpos", "qvel", "actions", "errors", "obs"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_states_of_a_recorded_attempt_give_its_recorded_observations(tmp_path, monkeypatch):
    """`physrec states` writes a recorded attempt's states as the STATES.npz that `parc-obs` reads:
    parc-obs on them and the attempt's source motion gives back the observations the policy saw
    (within the float32 tolerances of test_recorded_observations_equal_parcs_own_path)."""
    from physrec import cli
    monkeypatch.chdir(tmp_path)
    write_demo("data")
    write_manifest("manifest.tsv", index_dataset("data/dataset.yaml"))
    write_plan("plan.tsv", make_plan(read_manifest("manifest.tsv"), 16))
    rec = config.validate({"iterations": [{"name": "i", "dataset": "x"}]})["record"]
    spec = {"kind": "parc", "model": str(_checkpoint(tmp_path / "model.pt"))}
    run_record("plan.tsv", batch_ids("plan.tsv")[0], rec, spec, {"name": "mujoco"}, "builtin:humanoid", 0, 2, "rec",
               ["physrec"], progress=lambda s: None)
    episodes = json.loads(Path("rec/rollouts.json").read_text())["episodes"]
    later = next(e for e in episodes if e["start_fraction"] > 0)  # a later start: its time does not begin at 0
    for ep in (episodes[0], later):
        name = f"traj_{ep['episode_id']}"
        assert cli.main(["states", "--record-dir", "rec", "--attempt", name, "--out", f"{name}.npz"]) == 0
        assert cli.main(["parc-obs", "--reference", ep["source_path"], "--states", f"{name}.npz",
                         "--out", f"{name}.npy"]) == 0
        with h5py.File("rec/rollouts.h5") as h5:
            recorded = h5[name]["obs"][()]
        diff = np.abs(np.load(f"{name}.npy") - recorded)
        assert diff[:, 124:136].max() < 5e-5 and diff[:, 136:766].max() < 5e-5, name  # key bodies, targets
        diff[:, 124:136] = diff[:, 136:766] = 0
        assert diff.max() < 1e-5, name
    assert cli.main(["states", "--record-dir", "rec", "--attempt", "traj_999", "--out", "x.npz"]) == 1
