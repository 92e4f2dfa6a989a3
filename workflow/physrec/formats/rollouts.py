"""Trajectory files of a recorded batch, in ManiSkill's layout.

``rollouts.h5`` holds one group ``traj_N`` per attempt (actions, simulator states per
control step, terminated/truncated, success/fail, tracking errors, contacts, and the
observations of learned trackers);
``rollouts.json`` holds ``env_info`` and one record per episode (motion, source sha256,
start time, seed, elapsed steps, success, fail reason, source_type, source_desc).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from physrec.formats.atomic import atomic_output, atomic_write_text
from physrec.motion.termination import ERROR_COLUMNS

ENV_ID = "physrec/TrackMotion-v0"


@dataclass(frozen=True)
class Episode:
    """One attempt's arrays as read back from rollouts.h5."""

    qpos: np.ndarray  # [T+1, nq]
    qvel: np.ndarray  # [T+1, nv]
    contacts: np.ndarray  # [T+1, B] bool
    actions: np.ndarray  # [T, D]
    errors: np.ndarray  # [T, 4]
    ref_time: np.ndarray  # [T+1]
    obs: np.ndarray | None = None  # [T+1, O] for trackers with an observation


def _dataset(group: h5py.Group, name: str, data: np.ndarray, **options) -> None:
    # No timestamps in the file: same inputs give the same bytes.
    group.create_dataset(name, data=data, track_times=False, **options)


def write_h5(path: str | Path, episodes: list[dict]) -> None:
    """`episodes`: dicts with the arrays of :class:`Episode` plus `terminated`/`success` flags."""
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            for i, ep in enumerate(episodes):
                g = f.create_group(f"traj_{i}", track_order=True)
                T = len(ep["actions"])
                last = np.zeros(T, dtype=bool)
                if T:
                    last[-1] = True
                terminated, success = bool(ep["terminated"]), bool(ep["success"])
                _dataset(g, "actions", ep["actions"].astype(np.float32))
                _dataset(g, "terminated", last & terminated)
                _dataset(g, "truncated", last & (not terminated))
                _dataset(g, "success", last & success)
                _dataset(g, "fail", last & (not success))
                states = g.create_group("env_states", track_order=True)
                _dataset(states, "qpos", ep["qpos"])
                _dataset(states, "qvel", ep["qvel"])
                _dataset(g, "body_contacts", ep["contacts"].astype(bool))
                _dataset(g, "tracking_errors", ep["errors"].astype(np.float32))
                g["tracking_errors"].attrs["columns"] = ",".join(ERROR_COLUMNS)
                _dataset(g, "ref_time", ep["ref_time"])
                if ep.get("obs") is not None:  # [T+1, O]: what a learned tracker saw at each frame
                    _dataset(g, "obs", ep["obs"].astype(np.float32), compression="gzip", compression_opts=4,
                             shuffle=True)


def read_episode(path: str | Path, index: int) -> Episode:
    with h5py.File(path, "r") as f:
        g = f[f"traj_{index}"]
        return Episode(qpos=g["env_states/qpos"][()], qvel=g["env_states/qvel"][()],
                       contacts=g["body_contacts"][()], actions=g["actions"][()],
                       errors=g["tracking_errors"][()], ref_time=g["ref_time"][()],
                       obs=g["obs"][()] if "obs" in g else None)


def open_rollouts(path: str | Path) -> h5py.File:
    """rollouts.h5 opened for reading: a job that reads many attempts opens it once."""
    return h5py.File(path, "r")


def read_states(f: h5py.File, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(qpos [T+1, nq], body contacts [T+1, B]) of one attempt: all that selection needs,
    without the actions, errors and (large) observations."""
    g = f[f"traj_{index}"]
    return g["env_states/qpos"][()], g["body_contacts"][()]


def write_json(path: str | Path, env_info: dict, episodes: list[dict]) -> None:
    atomic_write_text(path, json.dumps({"env_info": {"env_id": ENV_ID, **env_info}, "episodes": episodes},
                                       indent=1, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
