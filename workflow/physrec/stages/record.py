"""The record job of one batch: load its motions, simulate, write every artifact of the batch."""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from physrec import RECORDING_VERSION, __version__, config
from physrec.formats.atomic import atomic_write_text
from physrec.progress import PhaseTimes
from physrec.stages.batch_plan import batch_rows
from physrec.motion.character import Character
from physrec.formats.hashing import stable_hash
from physrec.stages.index import read_indexed
from physrec.formats.motion_file import MotionFile, MotionFileError, write_motion_file
from physrec.recording.batch import record_batch
from physrec.recording.data import Attempt, BatchMotion, BatchRecording
from physrec.recording.plan import episode_seed
from physrec.formats.rollouts import ENV_ID, rollouts_writer, write_json
from physrec.formats.tables import write_tsv
from physrec.stages.gates import error_columns, kept_error_summary
from physrec.stages.integrity import output_digests, write_integrity
from physrec.motion.terrain import boxes_mesh
from physrec.sim.backend import BackendSpec, tensor_device
from physrec.sim import devices
from physrec.trackers.base import make_tracker

ATTEMPT_COLUMNS = ["attempt", "motion", "start_fraction", "start_time", "end_time", "steps", "success",
                   "fail_reason", "kept_steps", "kept_end_time", "max_root_pos_error", "max_root_rot_error_deg",
                   "mean_body_pos_error"]


class RecordError(RuntimeError):
    pass


def load_batch(plan: str | Path, batch: str, character: Character) -> tuple[list[BatchMotion], list[dict]]:
    """The batch's motions as index accepted them. Index checked everything recording relies on, so
    the one failure of a motion left here is a source that changed since: it fails the batch."""
    rows = batch_rows(plan, batch)
    motions = []
    for r in rows:
        try:
            mf = read_indexed(r["path"], r["sha256"], num_joints=character.num_joints,
                              num_bodies=character.num_bodies)
        except MotionFileError as e:
            raise RecordError(f"{e}; rerun the workflow to re-index") from e
        motions.append(BatchMotion(r["name"], mf.motion, mf.terrain))  # type: ignore[arg-type]
    return motions, rows


def write_terrain(path: Path, recording: BatchRecording, mesh: bool = True) -> None:
    """PARC's terrain.pkl: the batch's combined heightfield plus motion offsets and its mesh
    (record.terrain_mesh)."""
    misc = {"terrains_per_motion": 1,
            "motion_offsets": recording.tiled.offsets.astype(np.float32)[:, None, :],
            "motion_names": [m.name for m in recording.motions]}
    if mesh:
        misc["all_terrain_verts"], misc["all_terrain_tris"] = boxes_mesh(recording.world_boxes())
    write_motion_file(path, MotionFile(motion=None, terrain=recording.tiled.world, misc=misc))


def trajectory_info(rec: dict, tracker_spec: dict, backend_spec: dict, character_spec: str, seed: int,
                    character: Character, recording: BatchRecording) -> dict:
    """The top-level keys of rollouts.json: what the iteration's config decides (`env_info`, the same
    for every batch, so that ManiSkill's merge of them keeps everything; the tracker) and the
    software that recorded (`commit_info`). What differs between batches goes into each episode."""
    physics = config.record_physics_keys(rec)
    config_hash = stable_hash({"record": physics, "tracker": tracker_spec, "backend": backend_spec,
                               "character": character_spec, "seed": seed})
    env_kwargs = {"backend": backend_spec["name"], "device": backend_spec.get("device", "cpu"),
                  "character": character_spec, "tracker": tracker_spec, "seed": seed, "record": physics,
                  "config_hash": config_hash,
                  "qpos_layout": "MuJoCo qpos (free joint: pos, quat w,x,y,z; ball joints: quat w,x,y,z)",
                  "body_names": list(character.body_names)}
    return {
        "env_info": {"env_id": ENV_ID, "max_episode_steps": config.record_settings(rec).max_episode_steps,
                     "env_kwargs": env_kwargs},
        "commit_info": {"physrec_version": __version__, "recording_version": RECORDING_VERSION,
                        "config_hash": config_hash,
                        **{k: v for k, v in recording.provenance.items() if k.endswith("_version")}},
        "source_type": f"tracker:{tracker_spec['kind']}", "source_desc": recording.tracker_desc,
    }


def episode(a: Attempt) -> dict:
    """An attempt as formats.rollouts writes it."""
    return {"actions": a.actions, "qpos": a.qpos, "qvel": a.qvel, "contacts": a.contacts, "errors": a.errors,
            "ref_time": a.ref_time, "terminated": a.terminated, "success": a.success, "obs": a.obs}


def attempt_row(i: int, name: str, a: Attempt) -> dict:
    """attempts.tsv's row of attempt `traj_<i>`."""
    return {"attempt": f"traj_{i}", "motion": name, "start_fraction": round(a.start_fraction, 9),
            "start_time": round(a.start_time, 9), "end_time": round(a.end_time, 9), "steps": a.steps,
            "success": a.success, "fail_reason": a.fail_reason or None, "kept_steps": a.kept_steps,
            "kept_end_time": round(float(a.ref_time[a.kept_steps]), 9), **error_columns(kept_error_summary(a.errors, a.kept_steps))}


def run_record(plan: str | Path, batch: str, rec: dict, tracker_spec: dict, backend_spec: dict, character_spec: str,
               seed: int, threads: int, out_dir: str | Path, argv: list[str],
               progress: Callable[[str], None] = print, integrity_token: str = "") -> BatchRecording:
    out = Path(out_dir)
    character = Character.load(character_spec)
    settings = config.record_settings(rec)
    config.check_record_settings(rec, character, "--record")
    backend = BackendSpec(name=backend_spec["name"], device=backend_spec.get("device", "cpu"), threads=threads,
                          deterministic=bool(backend_spec.get("deterministic", False)))
    if tracker_spec["kind"] in ("parc", "exported"):  # only learned trackers import torch
        from physrec.trackers.policy import limit_torch_threads
        limit_torch_threads(threads)
    # A bad model file fails here, before any simulation; a policy runs where the simulator does.
    tracker = make_tracker(tracker_spec, character, tensor_device(backend))
    if hasattr(tracker, "use_threads"):
        tracker.use_threads(threads)
    read_from = time.perf_counter()
    motions, rows = load_batch(plan, batch, character)
    progress(f"[{batch}] read {len(motions)} motions in {time.perf_counter() - read_from:.1f} s")
    where = f"{threads} thread(s)" if backend.name == "mujoco" else f"{backend.name} on {backend.device}"
    progress(f"[{batch}] recording {len(motions)} motions with {tracker.describe()} on {where}")
    out.mkdir(parents=True, exist_ok=True)
    attempt_rows: list[dict] = []

    def on_attempts(found: list[Attempt]) -> None:
        """Attempts written as they come (rollouts.h5), a pass group at a time, in the recording's order."""
        add_episodes([episode(a) for a in found])
        first = len(attempt_rows)
        attempt_rows.extend([attempt_row(first + j, rows[a.motion]["name"], a) for j, a in enumerate(found)])

    with rollouts_writer(out / "rollouts.h5", threads) as add_episodes:
        recording = record_batch(motions, character, tracker, settings, backend, progress, batch, seed, on_attempts)
    if recording.seconds:
        progress(f"[{batch}] recorded in {recording.wall_seconds:.1f} s; the control loop's share: "
                 f"{PhaseTimes(recording.seconds).line()}")
    # terrain.pkl is written beside rollouts.json: relative to it, the folder reads the same anywhere.
    per_batch = {"batch": batch, "terrain_file": "terrain.pkl", "terrain_slots": recording.terrain_slots}
    recorded_by = {"physrec_version": __version__, **recording.provenance}
    json_eps = []
    for i, a in enumerate(recording.attempts):
        row = rows[a.motion]
        seed_i = episode_seed(seed, row["name"], a.start_fraction)
        json_eps.append({
            "episode_id": i, "episode_seed": seed_i, "control_mode": "pd_joint_pos", "elapsed_steps": a.steps,
            "reset_kwargs": {"seed": seed_i, "options": {"motion": row["name"], "start_time": a.start_time}},
            "success": a.success, "fail": not a.success, "fail_reason": a.fail_reason,
            "motion": row["name"], "motion_index": a.motion, "source_path": row["path"],
            "source_sha256": row["sha256"], "start_fraction": a.start_fraction, "start_time": a.start_time,
            "end_time": a.end_time, **per_batch, "world_offset": [float(v) for v in recording.tiled.offsets[a.motion]],
            "steps_per_call": a.steps_per_call, "recorded_by": recorded_by,
            **({"search": a.search} if a.search is not None else {}),
        })
    info = trajectory_info(rec, tracker_spec, backend_spec, character_spec, seed, character, recording)
    phase = PhaseTimes()
    with phase("terrain.pkl"):
        write_terrain(out / per_batch["terrain_file"], recording, rec["terrain_mesh"])
    env = {**per_batch, **info["env_info"]["env_kwargs"], **recorded_by, "control_hz": settings.physics.control_hz,
           "physics_hz": settings.physics.physics_hz, "terrain_layout": "square",
           **devices.held_gpu_provenance(),  # the GPU this job claimed, if any
           "motions": [{"name": m.name, "offset": [float(v) for v in off]}
                       for m, off in zip(recording.motions, recording.tiled.offsets)]}
    with phase("record_env.yaml"):
        atomic_write_text(out / "record_env.yaml", yaml.safe_dump(env, sort_keys=False))
    atomic_write_text(out / "record_args.txt", shlex.join(argv) + "\n")
    with phase("attempts.tsv"):
        write_tsv(out / "attempts.tsv", attempt_rows, ATTEMPT_COLUMNS)
    with phase("rollouts.json"):
        write_json(out / "rollouts.json", info, json_eps)
    with phase("integrity.txt"):  # last: the digests of everything above (stages/integrity.py)
        write_integrity(out, integrity_token, output_digests(out))
    progress(f"[{batch}] wrote its outputs in {phase.line()}")
    return recording
