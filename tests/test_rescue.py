"""`tracker.rescue`: a learned tracker records first; the search takes over the attempts it fails,
with the policy's targets as its nominal ones, and the other motions cost nothing extra."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from first_target_policy import FirstTargetFrame
from snakemake_project import IT, REPO, base_config, make_project, snakemake
from physrec import config
from physrec.demo import demo_motions
from physrec.formats.dataset_yaml import write_dataset
from physrec.formats.motion_file import read_motion_file, write_motion_file
from physrec.formats.tables import read_tsv_records
from physrec.observations.parc import observation_shapes
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.settings import RecordSettings
from physrec.stages.replay import replay_folder
from physrec.sim.backend import BackendSpec
from physrec.trackers.base import TrackingInput, make_tracker

SHARED = REPO.parent / "shared" / "parc_samples"
TEASER = SHARED / "TEASER_TERRAIN.pkl"
BIAS = 0.03  # rad on the right hip: it still stands the demo's stand_flat, and falls on TEASER_TERRAIN
# Small enough for the suite; it still tracks TEASER_TERRAIN and climb_step to their ends.
RESCUE = {"samples": 128, "kept": 16, "search_passes": 1}


class Biased(torch.nn.Module):
    """The `pd` tracker as an exported policy (the observation's first target frame), degraded by a
    bias; with `gain`, plus that times the sum of the character's root quantities and contact flags
    on every DOF (targets that depend on the state, not on the time alone)."""

    def __init__(self, ch, gain: float = 0.0) -> None:
        super().__init__()
        self.targets = FirstTargetFrame(ch)
        bias = torch.zeros(ch.num_dof)
        bias[ch.dof_slices[ch.body_names.index("right_thigh") - 1]] = BIAS
        self.register_buffer("bias", bias)
        shapes = observation_shapes(ch)
        start = sum(int(np.prod(shapes[k])) for k in ("char_obs", "tar_obs", "tar_contacts"))
        self.contacts, self.gain = slice(start, start + ch.num_bodies), gain

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        state = obs[:, :12].sum(dim=1, keepdim=True) + obs[:, self.contacts].sum(dim=1, keepdim=True)
        return self.targets(obs) + self.bias + self.gain * state


def _export(ch, path: Path, gain: float = 0.0) -> Path:
    n = torch.export.Dim("n", min=1)
    program = torch.export.export(Biased(ch, gain), (torch.zeros(2, 1312),), dynamic_shapes={"obs": {0: n}})
    torch.export.save(program, path)
    return path


def test_rescue_is_a_sampling_spec_written_out_whole():
    spec = config.tracker_spec({"kind": "exported", "model": "p.pt2", "observation": "parc",
                                "rescue": {"samples": 64}})
    assert spec["rescue"]["kind"] == "sampling" and spec["rescue"]["samples"] == 64
    assert spec["rescue"]["policy_margin_s"] == 1.0 and spec["rescue"]["kept"] == 32
    assert spec["rescue"]["nominal"] == "recorded"
    with pytest.raises(config.ConfigError, match="tracker.rescue.*nominal"):
        config.tracker_spec({"kind": "parc", "model": "m.pt", "rescue": {"nominal": "closed"}})
    with pytest.raises(config.ConfigError, match=r"tracker.rescue: kind must be 'sampling'"):
        config.tracker_spec({"kind": "parc", "model": "m.pt", "rescue": {"kind": "pd"}})
    with pytest.raises(config.ConfigError, match="tracker.rescue.*samples_per_window"):
        config.tracker_spec({"kind": "parc", "model": "m.pt", "rescue": {"samples_per_window": 3}})
    with pytest.raises(config.ConfigError, match="kind 'pd' takes no 'rescue'"):
        config.tracker_spec({"kind": "pd", "rescue": {}})


@pytest.mark.skipif(not TEASER.is_file(), reason=f"needs PARC's TEASER_TERRAIN in {SHARED}")
def test_a_degraded_policy_is_rescued_through_snakemake(tmp_path, ch):
    project = tmp_path / "project"
    project.mkdir()
    policy = _export(ch, project / "policy.pt2")
    spec = {"kind": "exported", "model": str(policy), "observation": "parc"}
    teaser, demo = read_motion_file(TEASER), demo_motions()
    names = ("TEASER_TERRAIN", "climb_step", "stand_flat")
    motions = [BatchMotion("TEASER_TERRAIN", teaser.motion, teaser.terrain)] + [
        BatchMotion(n, demo[n].motion, demo[n].terrain) for n in names[1:]]

    # Alone, the policy falls on TEASER_TERRAIN early and on climb_step's step late; it stands stand_flat.
    alone = record_batch(motions, ch, make_tracker(config.tracker_spec(spec), ch), RecordSettings(start_fractions=()))
    fell = dict(zip(names, alone.attempts))
    assert not fell["TEASER_TERRAIN"].success and fell["TEASER_TERRAIN"].end_time < 1.0
    assert not fell["climb_step"].success and fell["climb_step"].end_time > 2.0
    assert fell["stand_flat"].success

    data = tmp_path / "data"
    for n in names[1:]:
        write_motion_file(data / f"{n}.pkl", demo[n])
    write_dataset(data / "dataset.yaml", [(str(TEASER), 1.0)] + [(f"{n}.pkl", 1.0) for n in names[1:]])
    cfg = base_config(str(data / "dataset.yaml"), record={"threads": 2, "start_fractions": []})
    cfg["iterations"][0]["tracker"] = {**spec, "rescue": RESCUE}
    make_project(project, cfg)
    snakemake(project, timeout=600)

    res = project / "results" / IT
    record_dir = next(res.glob("record/*"))
    attempts = {r["motion"]: r for r in read_tsv_records(record_dir / "attempts.tsv")}
    episodes = {e["motion"]: e for e in json.loads((record_dir / "rollouts.json").read_text())["episodes"]}
    assert episodes["stand_flat"]["search"] == {"method": "exported"}  # the policy's success: not searched
    margin = round(1.0 * 30)  # policy_margin_s, in control steps
    with h5py.File(record_dir / "rollouts.h5") as h5:
        for name in names[:2]:
            length = teaser.motion.duration if name == "TEASER_TERRAIN" else demo[name].motion.duration
            assert attempts[name]["success"] == "true", name
            assert float(attempts[name]["end_time"]) >= length - 2 / 30 - 1e-6, name  # full length
            s = episodes[name]["search"]
            assert s["method"] == "search" and s["first_tracker"] == "exported"
            assert s["first_end_time"] == pytest.approx(fell[name].end_time)
            assert s["first_fail_reason"] == fell[name].fail_reason
            # Provenance: the steps before policy_margin_s ahead of the fall are the policy's own
            # targets (whole windows of 3); TEASER_TERRAIN falls too early for any.
            assert s["policy_steps"] == max(0, fell[name].steps - margin) // 3 * 3
            g = h5[f"traj_{episodes[name]['episode_id']}"]
            np.testing.assert_array_equal(g["actions"][:s["policy_steps"]], fell[name].actions[:s["policy_steps"]])
            assert not np.array_equal(g["actions"][s["policy_steps"]:s["policy_steps"] + 3],
                                      fell[name].actions[s["policy_steps"]:s["policy_steps"] + 3])
            assert g["obs"].shape == (len(g["actions"]) + 1, 1312)  # what the policy would have seen, every frame
    assert episodes["climb_step"]["search"]["policy_steps"] > 0
    env = yaml.safe_load((record_dir / "record_env.yaml").read_text())
    assert env["tracker"]["rescue"]["samples"] == 128 and env["tracker"]["rescue"]["lookahead_steps"] == 10
    assert all(r.ok and r.exact for r in replay_folder(record_dir))  # the rescued frames replay bit for bit


def _policy_on(ch, policy, a, frames: np.ndarray) -> np.ndarray:
    """The policy's targets on attempt `a`'s recorded observations of `frames`, as the recorder rounds them."""
    inp = TrackingInput(a.qpos[frames], a.qvel[frames], np.zeros(len(frames), np.int64), a.ref_time[frames], 1 / 30,
                        None, torch.from_numpy(a.obs[frames]))
    return ch.clip_action(policy.act(inp)[:, 0]).astype(np.float32)


def test_closed_loop_nominal_is_the_policy_on_the_searched_states(tmp_path, ch):
    """`nominal: policy`: each searched window starts from the policy's targets on the kept state.
    Without noise every child is its parent's, so each window's first recorded action is the
    policy's action on the recorded observation of that frame (a policy that reads the state and
    its contacts), bit for bit; on 1 and 2 threads alike."""
    policy = _export(ch, tmp_path / "policy.pt2", gain=0.01)
    spec = {"kind": "exported", "model": str(policy), "observation": "parc"}
    rescue = {"samples": 2, "kept": 1, "noise_rad": 0.0, "window_retries": 0, "restarts": 0,
              "search_passes": 1, "lookahead_steps": 3, "nominal": "policy"}
    demo = demo_motions()
    motions = [BatchMotion("climb_step", demo["climb_step"].motion, demo["climb_step"].terrain)]
    alone = make_tracker(config.tracker_spec(spec), ch)
    fell = record_batch(motions, ch, alone, RecordSettings(start_fractions=())).attempts[0]
    assert not fell.success
    runs = []
    for threads in (1, 2):
        tracker = make_tracker(config.tracker_spec({**spec, "rescue": rescue}), ch)
        tracker.use_threads(threads)
        runs.append(record_batch(motions, ch, tracker, RecordSettings(start_fractions=()),
                                 BackendSpec(threads=threads)).attempts[0])
    a = runs[0]
    for b in runs[1:]:
        assert a.actions.tobytes() == b.actions.tobytes() and a.qpos.tobytes() == b.qpos.tobytes()
    s = a.search
    assert s["nominal"] == "policy" and s["policy_steps"] == (fell.steps - 30) // 3 * 3 > 0
    np.testing.assert_array_equal(a.actions[:s["policy_steps"]], fell.actions[:s["policy_steps"]])
    starts = np.arange(s["policy_steps"], a.steps, 3)
    assert s["policy_states"] >= len(starts) > 5
    np.testing.assert_array_equal(a.actions[starts], _policy_on(ch, alone, a, starts))
    # Between window starts the policy's offset is held, not re-evaluated: the policy on those
    # frames' own states would give other targets.
    between = starts[:-1] + 1
    assert not np.array_equal(a.actions[between], _policy_on(ch, alone, a, between))


def test_closed_loop_rescue_through_snakemake(tmp_path, ch):
    """The closed-loop rescue records the demo's climb_step, which the policy falls on, full length
    through the workflow; its plan replays bit for bit."""
    project = tmp_path / "project"
    project.mkdir()
    policy = _export(ch, project / "policy.pt2")
    demo = demo_motions()
    data = tmp_path / "data"
    write_motion_file(data / "climb_step.pkl", demo["climb_step"])
    write_dataset(data / "dataset.yaml", [("climb_step.pkl", 1.0)])
    cfg = base_config(str(data / "dataset.yaml"), record={"threads": 2, "start_fractions": []})
    cfg["iterations"][0]["tracker"] = {"kind": "exported", "model": str(policy), "observation": "parc",
                                       "rescue": {**RESCUE, "nominal": "policy"}}
    make_project(project, cfg)
    snakemake(project, timeout=600)
    record_dir = next((project / "results" / IT).glob("record/*"))
    attempt = read_tsv_records(record_dir / "attempts.tsv")[0]
    assert attempt["success"] == "true" and float(attempt["end_time"]) >= demo["climb_step"].motion.duration - 2 / 30
    s = json.loads((record_dir / "rollouts.json").read_text())["episodes"][0]["search"]
    assert s["nominal"] == "policy" and s["policy_states"] > 0 and s["policy_steps"] > 0
    env = yaml.safe_load((record_dir / "record_env.yaml").read_text())
    assert env["tracker"]["rescue"]["nominal"] == "policy"
    assert all(r.ok and r.exact for r in replay_folder(record_dir))
