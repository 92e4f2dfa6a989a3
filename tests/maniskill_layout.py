"""What ManiSkill's trajectory tools require of physrec's trajectory files, checked without ManiSkill.

ManiSkill (checked against mani-skill 3.0.1) pulls torch with its CUDA wheels, sapien and
triton, too heavy for CI; these helpers do what its code does with the files, as
../shared/docs/DEPENDENCY_FACTS.md (section "ManiSkill trajectories") states it:
- `maniskill_load`: `ManiSkillTrajectoryDataset` opens `traj_<episode_id>` of every episode and
  reads its `obs` (an empty group is fine, a missing one is `KeyError: 'obs'`), `actions`,
  `terminated` and `truncated`; it needs `env_info.env_id` and `env_info.env_kwargs`.
- `maniskill_merge`: `merge_trajectory` keeps the first file's value of every top-level key but
  `episodes` and logs "Conflict detected for key ..." where a later file's differs; it copies
  every episode's group and renumbers the episodes 0..N-1.
- `check_layout`: the keys, dtypes and shapes physrec writes (docs/trajectories.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

NQ, NV, NU, BODIES, ERRORS = 43, 34, 28, 15, 4  # the built-in humanoid's


def _info(h5: Path) -> dict:
    return json.loads(h5.with_suffix(".json").read_text())


def maniskill_load(h5: Path) -> int:
    """The transitions ManiSkill's dataset class would load from `h5` (+ its .json)."""
    info = _info(h5)
    assert info["env_info"]["env_id"] and isinstance(info["env_info"]["env_kwargs"], dict)
    actions = []
    with h5py.File(h5, "r") as f:
        for ep in info["episodes"]:
            g = f[f"traj_{ep['episode_id']}"]
            T = len(g["actions"])
            obs = g["obs"]  # KeyError: 'obs' where ManiSkill's loader raises it
            if isinstance(obs, h5py.Dataset):  # the frames before each action
                assert len(obs[:T]) == T
            assert len(g["terminated"]) == len(g["truncated"]) == T
            actions.append(g["actions"][()])
    return len(np.vstack(actions)) if actions else 0


def maniskill_merge(sources: list[Path], out: Path) -> list[str]:
    """Merge `sources` into `out` (+ .json) as ManiSkill's merge does; returns its conflicts."""
    merged: dict = {"episodes": []}
    conflicts = []
    with h5py.File(out, "w") as o:
        for src in sources:
            info = _info(src)
            for key, value in info.items():
                if key == "episodes":
                    continue
                if key not in merged:
                    merged[key] = value
                elif merged[key] != value:
                    conflicts.append(f"Conflict detected for key {key} in {src}")
            with h5py.File(src, "r") as f:
                for ep in info["episodes"]:
                    n = len(merged["episodes"])
                    f.copy(f[f"traj_{ep['episode_id']}"], o, f"traj_{n}")
                    merged["episodes"].append({**ep, "episode_id": n})
    out.with_suffix(".json").write_text(json.dumps(merged, indent=2))
    return conflicts


def check_layout(h5: Path, obs_size: int | None = None) -> dict:
    """Every key, dtype and shape of one trajectory file (rollouts.h5 or trajectories.h5);
    `obs_size`: the observation's width, None for trackers without one. Returns its JSON."""
    info = _info(h5)
    assert list(info) == ["env_info", "commit_info", "source_type", "source_desc", "episodes"], list(info)
    env_info = info["env_info"]
    assert set(env_info) == {"env_id", "max_episode_steps", "env_kwargs"}
    assert env_info["env_id"] == "physrec/TrackMotion-v0"
    assert {"backend", "device", "character", "tracker", "seed", "record", "config_hash", "body_names"} <= \
        set(env_info["env_kwargs"])
    assert "batch" not in env_info["env_kwargs"] and "terrain_slots" not in env_info["env_kwargs"]
    assert {"physrec_version", "recording_version", "mujoco_version", "config_hash"} <= set(info["commit_info"])
    assert info["commit_info"]["config_hash"] == env_info["env_kwargs"]["config_hash"]
    assert info["source_type"].startswith("tracker:") and info["source_desc"]
    episodes = info["episodes"]
    with h5py.File(h5, "r") as f:
        assert sorted(f, key=lambda k: int(k.removeprefix("traj_"))) == [f"traj_{i}" for i in range(len(episodes))]
        for i, ep in enumerate(episodes):
            where = f"{h5}: traj_{i}"
            assert ep["episode_id"] == i, where
            g = f[f"traj_{i}"]
            T = ep["elapsed_steps"]
            assert 1 <= T <= env_info["max_episode_steps"], where
            shapes = {"actions": ((T, NU), np.float32), "terminated": ((T,), np.bool_), "truncated": ((T,), np.bool_),
                      "success": ((T,), np.bool_), "fail": ((T,), np.bool_),
                      "env_states/qpos": ((T + 1, NQ), np.float64), "env_states/qvel": ((T + 1, NV), np.float64),
                      "body_contacts": ((T + 1, BODIES), np.bool_), "tracking_errors": ((T, ERRORS), np.float32),
                      "ref_time": ((T + 1,), np.float64)}
            for key, (shape, dtype) in shapes.items():
                assert g[key].shape == shape and g[key].dtype == dtype, (where, key, g[key].shape, g[key].dtype)
            if obs_size is None:
                assert isinstance(g["obs"], h5py.Group) and not len(g["obs"]), where
            else:
                assert g["obs"].shape == (T + 1, obs_size) and g["obs"].dtype == np.float32, where
            terminated, truncated, success, fail = (g[k][()] for k in ("terminated", "truncated", "success", "fail"))
            assert not (terminated | truncated | success | fail)[:-1].any(), where  # flags on the last step only
            assert terminated[-1] != truncated[-1] and terminated[-1] == bool(ep["fail_reason"]), where
            assert success[-1] == ep["success"] and fail[-1] == ep["fail"] == (not ep["success"]), where
            assert ep["reset_kwargs"] == {"seed": ep["episode_seed"],
                                          "options": {"motion": ep["motion"], "start_time": ep["start_time"]}}, where
            assert isinstance(ep["episode_seed"], int) and ep["control_mode"] == "pd_joint_pos", where
            assert (h5.parent / ep["terrain_file"]).is_file(), where  # relative to the file's folder
            assert len(ep["world_offset"]) == 2 and ep["terrain_slots"] >= 1, where
            assert {"physrec_version", "backend", "mujoco_version", "device"} <= set(ep["recorded_by"]), where
    return info
