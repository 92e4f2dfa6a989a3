"""The record job of one batch: load its motions, simulate, write every artifact of the batch."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from physrec import __version__, config
from physrec.formats.atomic import atomic_write_text
from physrec.stages.batch_plan import batch_rows
from physrec.motion.character import Character
from physrec.formats.hashing import stable_hash
from physrec.stages.index import read_indexed
from physrec.formats.motion_file import MotionFile, MotionFileError, write_motion_file
from physrec.recording import BatchMotion, BatchRecording, episode_seed, record_batch
from physrec.formats.rollouts import write_h5, write_json
from physrec.formats.tables import write_tsv
from physrec.motion.terrain import boxes_mesh
from physrec.sim.backend import BackendSpec, tensor_device
from physrec.sim import devices
from physrec.trackers.base import make_tracker

ATTEMPT_COLUMNS = ["attempt", "motion", "start_fraction", "start_time", "end_time", "steps", "success",
                   "fail_reason", "kept_steps", "kept_end_time", "max_root_pos_error", "max_root_rot_error",
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


def write_terrain(path: Path, recording: BatchRecording) -> None:
    """PARC's terrain.pkl: the batch's combined heightfield plus motion offsets and its mesh."""
    verts, tris = boxes_mesh(recording.world_boxes())
    misc = {"terrains_per_motion": 1,
            "motion_offsets": recording.tiled.offsets.astype(np.float32)[:, None, :],
            "motion_names": [m.name for m in recording.motions],
            "all_terrain_verts": verts, "all_terrain_tris": tris}
    write_motion_file(path, MotionFile(motion=None, terrain=recording.tiled.world, misc=misc))


def kept_error_summary(errors: np.ndarray, kept_steps: int) -> dict[str, float]:
    """Worst and mean tracking errors over the steps a recorded motion may contain."""
    e = errors[:kept_steps]
    if not len(e):
        return {"max_root_pos_error": 0.0, "max_root_rot_error": 0.0, "mean_body_pos_error": 0.0}
    return {"max_root_pos_error": float(e[:, 0].max()), "max_root_rot_error": float(e[:, 1].max()),
            "mean_body_pos_error": float(e[:, 3].mean())}


def run_record(plan: str | Path, batch: str, rec: dict, tracker_spec: dict, backend_spec: dict, character_spec: str,
               seed: int, threads: int, out_dir: str | Path, argv: list[str],
               progress: Callable[[str], None] = print) -> BatchRecording:
    out = Path(out_dir)
    character = Character.load(character_spec)
    settings = config.record_settings(rec)
    config.check_record_settings(rec, character, "--record")
    backend = BackendSpec(name=backend_spec["name"], device=backend_spec.get("device", "cpu"), threads=threads)
    if tracker_spec["kind"] in ("parc", "exported"):  # only learned trackers import torch
        from physrec.trackers.policy import limit_torch_threads
        limit_torch_threads(threads)
    # A bad model file fails here, before any simulation; a policy runs where the simulator does.
    tracker = make_tracker(tracker_spec, character, tensor_device(backend))
    motions, rows = load_batch(plan, batch, character)
    devices.claim_standin(progress)  # tests only: PHYSREC_STANDIN_GPUS (sim/devices.py)
    where = f"{threads} thread(s)" if backend.name == "mujoco" else f"{backend.name} on {backend.device}"
    progress(f"[{batch}] recording {len(motions)} motions with {tracker.describe()} on {where}")
    recording = record_batch(motions, character, tracker, settings, backend, progress, batch, seed)
    source_type = f"tracker:{tracker_spec['kind']}"
    h5_eps, json_eps, attempt_rows = [], [], []
    for i, a in enumerate(recording.attempts):
        row = rows[a.motion]
        h5_eps.append({"actions": a.actions, "qpos": a.qpos, "qvel": a.qvel, "contacts": a.contacts,
                       "errors": a.errors, "ref_time": a.ref_time, "terminated": a.terminated, "success": a.success,
                       "obs": a.obs})
        json_eps.append({
            "episode_id": i, "episode_seed": episode_seed(seed, row["name"], a.start_fraction),
            "control_mode": "pd_joint_pos", "elapsed_steps": a.steps,
            "reset_kwargs": {"motion": row["name"], "start_time": a.start_time},
            "motion": row["name"], "motion_index": a.motion, "source_path": row["path"],
            "source_sha256": row["sha256"], "start_fraction": a.start_fraction, "start_time": a.start_time,
            "end_time": a.end_time, "success": a.success, "fail_reason": a.fail_reason,
            "world_offset": [float(v) for v in recording.tiled.offsets[a.motion]],
            "source_type": source_type, "source_desc": recording.tracker_desc,
            "steps_per_call": a.steps_per_call,
            **({"search": a.search} if a.search is not None else {}),
        })
        attempt_rows.append({
            "attempt": f"traj_{i}", "motion": row["name"], "start_fraction": a.start_fraction,
            "start_time": round(a.start_time, 9), "end_time": round(a.end_time, 9), "steps": a.steps,
            "success": a.success, "fail_reason": a.fail_reason or None, "kept_steps": a.kept_steps,
            "kept_end_time": round(float(a.ref_time[a.kept_steps]), 9),
            **kept_error_summary(a.errors, a.kept_steps)})
    env_info = {
        "max_episode_steps": max((a.steps for a in recording.attempts), default=0),
        "env_kwargs": {"batch": batch, **recording.provenance, "physrec_version": __version__,
                       "character": character_spec, "tracker": tracker_spec, "seed": seed,
                       "record": config.record_physics_keys(rec),
                       "config_hash": stable_hash({"record": config.record_physics_keys(rec), "tracker": tracker_spec,
                                                   "backend": backend_spec, "character": character_spec,
                                                   "seed": seed}),
                       "terrain_slots": recording.terrain_slots,
                       "qpos_layout": "MuJoCo qpos (free joint: pos, quat w,x,y,z; ball joints: quat w,x,y,z)",
                       "body_names": list(character.body_names)},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_terrain(out / "terrain.pkl", recording)
    atomic_write_text(out / "record_env.yaml", yaml.safe_dump({
        **env_info["env_kwargs"], "control_hz": settings.physics.control_hz,
        "physics_hz": settings.physics.physics_hz, "terrain_layout": "square",
        **devices.held_gpu_provenance(),  # the GPU this job claimed, if any
        "motions": [{"name": m.name, "offset": [float(v) for v in off]}
                    for m, off in zip(recording.motions, recording.tiled.offsets)]}, sort_keys=False))
    atomic_write_text(out / "record_args.txt", shlex.join(argv) + "\n")
    write_tsv(out / "attempts.tsv", attempt_rows, ATTEMPT_COLUMNS)
    write_h5(out / "rollouts.h5", h5_eps)
    write_json(out / "rollouts.json", env_info, json_eps)
    return recording
