"""Trajectory files of a recorded batch, in ManiSkill's layout (docs/trajectories.md maps every key).

``rollouts.h5`` holds one group ``traj_N`` per attempt (actions, simulator states per
control step, terminated/truncated, success/fail, tracking errors, contacts, and ``obs``:
the observations of learned trackers, an empty group for the others);
``rollouts.json`` holds ``env_info`` (the same for every batch of an iteration),
``commit_info``, ``source_type``/``source_desc`` and one record per episode with everything
that differs between batches (batch, terrain file, world offset, the simulator that ran it).
Paths to files physrec wrote are relative to the JSON's folder, so a folder reads the same
wherever it is.
:func:`merge_trajectories` joins batches into one such file, as ManiSkill's merge does.
"""

from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import h5py
import numpy as np

from physrec.formats.atomic import atomic_output, atomic_write_text
from physrec.motion.termination import ERROR_COLUMNS

ENV_ID = "physrec/TrackMotion-v0"
TRAJECTORIES = "trajectories.h5"  # an iteration's merged file (record.merged_trajectories), beside its .json
# The top-level JSON keys besides `episodes`, in ManiSkill's places. A merge keeps one value of
# each: batches of an iteration must agree on AGREED_KEYS (what the config decides).
TOP_KEYS = ("env_info", "commit_info", "source_type", "source_desc")
AGREED_KEYS = ("env_info", "source_type", "source_desc")


class TrajectoryError(ValueError):
    """Trajectory files that cannot be merged; the message names the file."""


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


COMPACT_BYTES = 60 << 10  # stored in their object header (HDF5 allows just under 64 KiB)


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """One array of an episode. No timestamps in the file: same inputs give the same bytes.

    HDF5 spends about 0.3 ms creating each dataset (measured here; 10 per episode, so 12-18 s
    for a GPU batch of 4096 motions) whatever the file's options; the compact layout, data in
    the object header, halves that for the small arrays that most of an episode's are."""
    data = np.ascontiguousarray(data)
    if not 0 < data.nbytes <= COMPACT_BYTES:
        group.create_dataset(name, data=data, track_times=False)
        return
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    dcpl.set_layout(h5py.h5d.COMPACT)
    d = h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(data.dtype, logical=True),
                        h5py.h5s.create_simple(data.shape), dcpl=dcpl)
    d.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


OBS_GZIP_LEVEL = 4


def _obs_chunks(shape: tuple[int, ...]) -> tuple[int, int]:
    """HDF5 chunk shape of observations [T+1, O]: h5py's own choice for a compressed dataset
    (about 20 kB), the layout the files had when HDF5 compressed them itself."""
    from h5py._hl.filters import guess_chunk
    return tuple(guess_chunk(shape, None, 4))  # type: ignore[return-value]


def _deflated_chunks(obs: np.ndarray) -> list[tuple[tuple[int, int], bytes]]:
    """(offset, bytes) of every chunk of `obs` [T+1, O] float32 after HDF5's shuffle and deflate
    filters (edge chunks padded with zeros, as HDF5 stores them). zlib releases the GIL, so a
    thread pool compresses a batch's observations in parallel, where HDF5's own filters run on
    one core (about 26 MB/s measured here; a GPU batch of 4096 PARC motions holds 2-3 GB)."""
    rows, cols = _obs_chunks(obs.shape)
    out = []
    for r in range(0, obs.shape[0], rows):
        for c in range(0, obs.shape[1], cols):
            chunk = np.zeros((rows, cols), dtype=np.float32)
            part = obs[r:r + rows, c:c + cols]
            chunk[:part.shape[0], :part.shape[1]] = part
            shuffled = chunk.view(np.uint8).reshape(-1, 4).T.tobytes()  # HDF5's shuffle: byte planes
            out.append(((r, c), zlib.compress(shuffled, OBS_GZIP_LEVEL)))
    return out


def _write_obs(group: h5py.Group, obs: np.ndarray, chunks: list[tuple[tuple[int, int], bytes]]) -> None:
    """`obs` as a gzip+shuffle dataset whose chunks were compressed already (_deflated_chunks)."""
    d = group.create_dataset("obs", shape=obs.shape, dtype=np.float32, chunks=_obs_chunks(obs.shape),
                             compression="gzip", compression_opts=OBS_GZIP_LEVEL, shuffle=True, track_times=False)
    for offset, data in chunks:
        d.id.write_direct_chunk(offset, data)


@contextmanager
def rollouts_writer(path: str | Path, threads: int = 1) -> Iterator[Callable[[list[dict]], None]]:
    """rollouts.h5 written as its episodes come: yields `add(episodes)`, which writes them as the
    next `traj_<i>` groups, so a record job holds only the episodes not written yet. `episodes`:
    dicts with the arrays of :class:`Episode` plus `terminated`/`success` flags; `threads`:
    compress the observations on this many threads. The file appears whole when the block ends
    (a killed job leaves none); written in one call or many, its bytes are the same."""
    with atomic_output(path) as tmp, ThreadPoolExecutor(max(1, threads)) as pool, \
            h5py.File(tmp, "w", track_order=True) as f:
        def add(episodes: list[dict]) -> None:
            obs = [None if ep.get("obs") is None else np.ascontiguousarray(ep["obs"], dtype=np.float32)
                   for ep in episodes]
            # In order, ahead of the writes: each episode's chunks are ready when its turn comes.
            deflated = pool.map(lambda o: None if o is None else _deflated_chunks(o), obs)
            for ep, o, chunks in zip(episodes, obs, deflated):
                _write_episode(f.create_group(f"traj_{len(f)}", track_order=True), ep, o, chunks)

        yield add


def write_h5(path: str | Path, episodes: list[dict], threads: int = 1) -> None:
    """Every episode at once (see rollouts_writer)."""
    with rollouts_writer(path, threads) as add:
        add(episodes)


def _write_episode(g: h5py.Group, ep: dict, obs: np.ndarray | None, chunks) -> None:
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
    if chunks is not None:  # [T+1, O]: what a learned tracker saw at each frame
        _write_obs(g, obs, chunks)
    else:  # ManiSkill's obs_mode "none": its dataset loader needs the entry
        g.create_group("obs")


def read_episode(path: str | Path, index: int) -> Episode:
    with open_rollouts(path) as f:
        g = f[f"traj_{index}"]
        obs = g.get("obs")
        return Episode(qpos=g["env_states/qpos"][()], qvel=g["env_states/qvel"][()],
                       contacts=g["body_contacts"][()], actions=g["actions"][()],
                       errors=g["tracking_errors"][()], ref_time=g["ref_time"][()],
                       obs=obs[()] if isinstance(obs, h5py.Dataset) else None)


def open_rollouts(path: str | Path) -> h5py.File:
    """rollouts.h5 opened for reading (a job that reads many attempts opens it once), or an
    error naming the file when it is not a whole HDF5 file (truncated, overwritten)."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise TrajectoryError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]}); it was cut short or "
                              "overwritten after it was recorded: the next run of the workflow records its batch "
                              "again") from None


def read_states(f: h5py.File, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(qpos [T+1, nq], body contacts [T+1, B]) of one attempt: all that selection needs,
    without the actions, errors and (large) observations."""
    g = f[f"traj_{index}"]
    return g["env_states/qpos"][()], g["body_contacts"][()]


def read_errors(f: h5py.File, index: int) -> np.ndarray:
    """Tracking errors [T, 4] of one attempt (ERROR_COLUMNS): where segment selection cuts it."""
    return f[f"traj_{index}"]["tracking_errors"][()]


def write_json(path: str | Path, info: dict, episodes: list[dict]) -> None:
    """`info`: the :data:`TOP_KEYS`; the episodes come last."""
    atomic_write_text(path, json.dumps({**{k: info[k] for k in TOP_KEYS}, "episodes": episodes},
                                       indent=1, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def merge_trajectories(sources: list[Path], out_h5: Path, warn: Callable[[str], None] = print) -> int:
    """Every episode of the trajectory files `sources` (rollouts.h5, each beside its .json) in
    one file `out_h5` (+ .json), renumbered in order, arrays copied unchanged, each episode's
    record kept with `batch_episode_id`, its id in its own file, and its `terrain_file` relative
    to the new file's folder; returns the count.

    The files must agree on :data:`AGREED_KEYS` (ManiSkill's merge keeps the first file's, so
    anything that differs there is lost). `commit_info` is the first file's, as in ManiSkill's
    merge; where batches were recorded by other software, each episode's `recorded_by` says so.
    """
    infos = [read_json(p.with_suffix(".json")) for p in sources]
    for p, info in zip(sources[1:], infos[1:]):
        first = sources[0].with_suffix(".json")
        for key in AGREED_KEYS:
            if info.get(key) != infos[0].get(key):
                raise TrajectoryError(f"{p.with_suffix('.json')}: {key} differs from {first}'s (batches of one "
                                      "iteration recorded with other settings: record them again)")
        if info.get("commit_info") != infos[0].get("commit_info"):
            warn(f"{p.with_suffix('.json')}: recorded by other software than {first} (commit_info); the merged "
                 "file keeps the first one's, and each episode its own in recorded_by")
    episodes = []
    with atomic_output(out_h5) as tmp:
        with h5py.File(tmp, "w", track_order=True) as out:
            for p, info in zip(sources, infos):
                with open_rollouts(p) as f:
                    for ep in info["episodes"]:
                        name = f"traj_{ep['episode_id']}"
                        if name not in f:
                            raise TrajectoryError(f"{p}: has no {name}, which {p.with_suffix('.json')} names")
                        f.copy(f[name], out, f"traj_{len(episodes)}")
                        episodes.append({"episode_id": len(episodes), "batch_episode_id": ep["episode_id"],
                                         **{k: v for k, v in ep.items() if k != "episode_id"},
                                         "terrain_file": os.path.relpath(p.parent / ep["terrain_file"], out_h5.parent)})
    # No batch (no valid motion): nothing says what the environment was.
    write_json(out_h5.with_suffix(".json"), infos[0] if infos else dict.fromkeys(TOP_KEYS), episodes)
    return len(episodes)
