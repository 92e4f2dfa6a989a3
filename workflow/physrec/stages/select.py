"""Selection: per motion, what becomes recorded motion, written as PARC files.

record.recovery: parc: full length first; otherwise the earliest later start that succeeded.
An attempt succeeded when no termination fired before the motion's end (minus PARC's
tolerance); the optional quality thresholds can still reject it. record.recovery: segments:
every clean segment of the motion's attempts (stages/segments.py), one file each. Cheap, so it
reruns alone when only thresholds change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from physrec import __version__, config
from physrec.motion.character import Character
from physrec.formats.hashing import sha256_file, stable_hash
from physrec.formats.motion_file import MotionData, MotionFile, MotionFileError, write_motion_file
from physrec.motion.quat import positive_w
from physrec.formats.rollouts import open_rollouts, read_errors, read_json, read_states
from physrec.formats.tables import read_tsv_records, write_tsv
from physrec.formats.text import fitting_stem
from physrec.motion.terrain import crop_around_path
from physrec.stages.index import read_indexed
from physrec.stages.gates import recorded_steps, rejection
from physrec.stages.segments import SEGMENT, Segment, choose_segments
from physrec.stages.integrity import check_record_outputs, damaged, write_integrity

RECORDED_SUFFIX = "_rec"
# A segment's file: <motion>_<start in ms>ms_rec.pkl; its motion's part is cut for the longest
# start (record.max_duration_s is far below 10**9 ms), so that every segment of a motion shares it.
SEGMENT_SUFFIX_LONGEST = f"_999999999ms{RECORDED_SUFFIX}.pkl"
SELECTED_COLUMNS = ["motion", "status", "attempt", "start_fraction", "start_time", "end_time",
                    "recorded_duration", "attempts", "fail_reason", "recorded_file", "recorded_sha256",
                    "mean_body_pos_error", "max_root_pos_error", "max_root_rot_error_deg"]
# Per-frame extras of the source that no longer line up with a recorded motion's frames.
_PER_FRAME_MISC = ("hf_mask_inds", "obs", "obs_shapes")


def recorded_file_name(name: str, segment_start: float | None = None) -> str:
    """`<name>_rec.pkl`, or for a segment (one of several pieces of its source) starting at
    `segment_start` seconds `<name>_<start in ms>ms_rec.pkl`: unique, within NAME_MAX bytes."""
    suffix = f"{RECORDED_SUFFIX}.pkl"
    if segment_start is None:
        return fitting_stem(name, suffix) + suffix
    return fitting_stem(name, SEGMENT_SUFFIX_LONGEST) + f"_{round(segment_start * 1000)}ms{suffix}"


def choose(attempts: list[dict[str, str]], sel: dict, control_hz: int) -> tuple[str, dict[str, str] | None, str]:
    """(status, chosen attempt, reason) for one motion's attempts, recorded at `control_hz`."""
    ordered = sorted(attempts, key=lambda a: float(a["start_fraction"]))
    rejected = ""
    for a in ordered:
        if a["success"] != "true":
            continue
        why = rejection(a, sel, control_hz)
        if not why:
            status = "recorded" if float(a["start_fraction"]) == 0.0 else "recorded_later_start"
            return status, a, ""
        rejected = rejected or why
    if rejected:
        return "rejected", None, rejected
    return "failed", None, ordered[-1]["fail_reason"] if ordered else "no attempt"


def recorded_motion(character: Character, episode_qpos: np.ndarray, contacts: np.ndarray, offset: np.ndarray,
                    fps: int) -> MotionData:
    """Simulated states -> PARC motion data in the source motion's own coordinates."""
    root_pos, root_rot, joint_rot = character.qpos_to_pose(episode_qpos)
    root_pos = root_pos - np.array([offset[0], offset[1], 0.0])
    return MotionData(root_pos=root_pos.astype(np.float32), root_rot=positive_w(root_rot).astype(np.float32),
                      joint_rot=positive_w(joint_rot).astype(np.float32),
                      body_contacts=contacts.astype(np.float32), fps=int(fps), loop_mode="CLAMP")


def backend_label(recorded_by: dict) -> str:
    """Engine and versions that recorded an episode (its `recorded_by`), e.g. 'mujoco 4.0.0' or
    'mujoco_warp 4.0.0 (warp 1.19.0, ...)'."""
    name = recorded_by.get("backend", "mujoco")
    if name == "mujoco_warp":
        return (f"{name} {recorded_by['mujoco_warp_version']} (mujoco {recorded_by['mujoco_version']}, "
                f"warp {recorded_by['warp_version']}, {recorded_by['device']})")
    return f"{name} {recorded_by['mujoco_version']}"


def run_select(record_dir: str | Path, sel: dict, out_dir: str | Path, integrity_token: str = "") -> list[dict]:
    record_dir, out = Path(record_dir), Path(out_dir)
    check_record_outputs(record_dir, ("rollouts.h5", "rollouts.json", "attempts.tsv"))
    info = read_json(record_dir / "rollouts.json")
    env = info["env_info"]["env_kwargs"]
    attempts = read_tsv_records(record_dir / "attempts.tsv")
    character = Character.load(env["character"])
    fps = int(env["record"]["control_hz"])
    sel = config.selection_keys(sel, env["record"].get("recovery", "parc"))
    by_motion: dict[str, list[dict[str, str]]] = {}
    for a in attempts:
        by_motion.setdefault(a["motion"], []).append(a)
    rows = []
    (out / "motions").mkdir(parents=True, exist_ok=True)
    with open_rollouts(record_dir / "rollouts.h5") as h5:
        batch = _Batch(record_dir, info, h5, {f"traj_{e['episode_id']}": e for e in info["episodes"]})
        for name, tries in by_motion.items():
            rows += _select_motion(name, tries, sel, batch, character, fps, out)
    write_tsv(out / "selected.tsv", rows, SELECTED_COLUMNS)
    write_integrity(out, integrity_token)
    return rows


@dataclass(frozen=True)
class _Batch:
    """A record folder as selection reads it."""

    dir: Path
    info: dict  # its rollouts.json
    h5: Any  # its rollouts.h5, open
    episodes: dict[str, dict]  # rollouts.json's episode records by attempt id (traj_<i>)

    def episode(self, attempt: str) -> dict:
        """The rollouts.json record of an attempts.tsv row, paired by id, which rollouts.h5 must hold too."""
        if attempt not in self.episodes:
            raise damaged(self.dir / "rollouts.json", f"no episode {attempt}, which attempts.tsv lists")
        if attempt not in self.h5:
            raise damaged(self.dir / "rollouts.h5", f"no group {attempt}, which rollouts.json lists")
        return self.episodes[attempt]


def _kept(tries: list[dict[str, str]], sel: dict, batch: _Batch, fps: int) -> tuple[str, list[Segment], str]:
    """(status, the pieces kept in source order, reason) of one motion under its record.recovery:
    PARC's one chosen attempt, or every clean segment (stages/segments.py)."""
    rec = batch.info["env_info"]["env_kwargs"]["record"]
    if rec.get("recovery", "parc") == "parc":
        status, chosen, reason = choose(tries, sel, fps)
        return status, [] if chosen is None else [Segment(chosen, recorded_steps(chosen, fps), chosen, status)], reason

    def errors(a: dict[str, str]) -> np.ndarray:
        return read_errors(batch.h5, int(batch.episode(a["attempt"])["episode_id"]))
    return choose_segments(tries, errors, sel, rec["min_segment_s"], fps)


def _select_motion(name: str, tries: list[dict[str, str]], sel: dict, batch: _Batch, character: Character,
                   fps: int, out: Path) -> list[dict]:
    """The selected.tsv rows of one motion, one per piece kept (writing its motion file), or one
    saying why none was."""
    status, kept, reason = _kept(tries, sel, batch, fps)
    if not kept:
        row = {c: None for c in SELECTED_COLUMNS}
        row.update(motion=name, status=status, attempts=len(tries), fail_reason=reason or None)
        return [row]
    return [_write_piece(name, piece, len(tries), sel, batch, character, fps, out) for piece in kept]


def _write_piece(name: str, piece: Segment, attempts: int, sel: dict, batch: _Batch, character: Character,
                 fps: int, out: Path) -> dict:
    """Write one kept piece of motion `name` as a PARC motion file; its selected.tsv row."""
    info = batch.info
    config_hash = info["env_info"]["env_kwargs"]["config_hash"]
    chosen, steps = piece.attempt, piece.steps
    ep_info = batch.episode(chosen["attempt"])
    qpos, contacts = read_states(batch.h5, int(ep_info["episode_id"]))
    end_time = round(float(chosen["start_time"]) + steps / fps, 9)  # as attempts.tsv writes times
    try:
        source = read_indexed(ep_info["source_path"], ep_info["source_sha256"], num_joints=character.num_joints,
                              num_bodies=character.num_bodies)
    except MotionFileError as e:
        raise MotionFileError(e.path, f"{e.problem} (batch {ep_info['batch']} was recorded from it); "
                                      "record it again") from e
    data = recorded_motion(character, qpos[:steps + 1], contacts[:steps + 1],
                           np.asarray(ep_info["world_offset"]), fps)
    terrain = crop_around_path(source.terrain, data.root_pos[:, :2].astype(np.float64),  # type: ignore[arg-type]
                               sel.get("terrain_padding_m", 3.2))
    misc = {k: v for k, v in (source.misc or {}).items() if k not in _PER_FRAME_MISC}
    misc.update({
        "physrec:source_name": name, "physrec:source_path": ep_info["source_path"],
        "physrec:source_sha256": ep_info["source_sha256"],
        "physrec:start_time": float(chosen["start_time"]), "physrec:start_fraction": float(chosen["start_fraction"]),
        "physrec:end_time": end_time, "physrec:tracker": info["source_type"],
        "physrec:tracker_desc": info["source_desc"],
        # How a planner's attempt was found ("pd", "search"); absent for other trackers.
        **({"physrec:tracker_method": ep_info["search"]["method"]} if "search" in ep_info else {}),
        "physrec:backend": backend_label(ep_info["recorded_by"]), "physrec:config_hash": config_hash,
        "physrec:selection_hash": stable_hash(sel), "physrec:physrec_version": __version__,
        "physrec:seed": int(ep_info["episode_seed"]), "physrec:batch": ep_info["batch"],
        "physrec:attempt": chosen["attempt"]})
    if piece.status == SEGMENT:
        misc.update({"physrec:recovery": "segments", "physrec:attempt_end_time": float(chosen["end_time"]),
                     "physrec:attempt_fail_reason": chosen["fail_reason"]})
    path = out / "motions" / recorded_file_name(name, float(chosen["start_time"]) if piece.status == SEGMENT else None)
    write_motion_file(path, MotionFile(motion=data, terrain=terrain, misc=misc))
    row = {c: None for c in SELECTED_COLUMNS}
    row.update(motion=name, status=piece.status, attempts=attempts, attempt=chosen["attempt"],
               start_fraction=float(chosen["start_fraction"]), start_time=float(chosen["start_time"]),
               end_time=end_time, recorded_duration=data.duration, recorded_file=path.name,
               recorded_sha256=sha256_file(path), mean_body_pos_error=float(piece.row["mean_body_pos_error"]),
               max_root_pos_error=float(piece.row["max_root_pos_error"]),
               max_root_rot_error_deg=float(piece.row["max_root_rot_error_deg"]))
    return row
