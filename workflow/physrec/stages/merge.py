"""Merge: the recorded motions of all batches, one manifest, a summary, the next dataset YAML,
and (record.merged_trajectories) one trajectory file of every batch's episodes.

Weights in the next dataset: entries of the base dataset keep theirs; a recorded motion
gets its source's weight scaled by the fraction of the source it covers (PARC weighs
motions by duration, so a motion recorded from 40 % on counts for 60 % of it), times
``merge.recorded_weight_scale`` (recorded_weight).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

from physrec.stages.gates import rejected_gate
from physrec.stages.integrity import write_integrity
from physrec.formats.atomic import atomic_write_text
from physrec.formats.rollouts import TRAJECTORIES, merge_trajectories
from physrec.formats.dataset_yaml import DatasetEntry, motion_name, read_dataset, write_dataset
from physrec.stages.index import display_path, read_manifest
from physrec.stages.batch_plan import read_plan
from physrec.formats.tables import read_tsv_records, write_tsv

MERGED_COLUMNS = ["name", "class", "batch", "status", "valid", "error", "source_path", "source_sha256",
                  "source_duration", "attempts", "start_fraction", "start_time", "end_time",
                  "recorded_duration", "recorded_path", "recorded_sha256", "weight", "fail_reason"]
RECORDED_STATUSES = ("recorded", "recorded_later_start", "recorded_segment")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link keeps the file's mtime, so the next iteration does not redo unchanged motions."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def recorded_weight(source_weight: float, recorded_duration: float, source_duration: float, scale: float) -> float:
    """A recorded motion's weight: its source's, times the fraction of the source it covers (at most
    all of it: a recording never counts for more than its source), times `scale`."""
    covered = min(1.0, recorded_duration / source_duration) if source_duration > 0 else 0.0
    return source_weight * max(0.0, covered) * scale


def merged_rows(manifest: list[dict[str, str]], plan: list[dict[str, str]],
                selected: dict[str, list[dict[str, str]]], out_dir: Path, weight_scale: float) -> list[dict]:
    """One row per kept piece of each motion (a segment each with record.recovery: segments), or
    one saying why none was kept. A segment's weight is its share of its source's duration, so a
    motion's pieces together never weigh more than it."""
    batch_of = {r["name"]: r["batch"] for r in plan}
    rows = []
    for m in manifest:
        for s in (selected.get(m["name"]) or [{}]) if m["valid"] == "true" else [{}]:
            rows.append(_merged_row(m, s, batch_of, out_dir, weight_scale))
    return rows


def _merged_row(m: dict[str, str], s: dict[str, str], batch_of: dict[str, str], out_dir: Path,
                weight_scale: float) -> dict:
    """The manifest.tsv row of index row `m` and one of its selected.tsv rows `s` ({}: none)."""
    status = s.get("status") or ("invalid" if m["valid"] != "true" else "not_recorded")
    row = {c: None for c in MERGED_COLUMNS}
    row.update(name=m["name"], **{"class": m["class"]}, batch=batch_of.get(m["name"]), status=status,
               valid=m["valid"] == "true", error=m["error"] or None, source_path=m["path"],
               source_sha256=m["sha256"] or None, source_duration=float(m["duration"]) if m["duration"] else None)
    if s:
        row.update(attempts=int(s["attempts"]), fail_reason=s["fail_reason"] or None)
    if status in RECORDED_STATUSES:
        rec_dur = float(s["recorded_duration"])
        src_dur = float(m["duration"])
        row.update(start_fraction=float(s["start_fraction"]), start_time=float(s["start_time"]),
                   end_time=float(s["end_time"]), recorded_duration=rec_dur,
                   recorded_path=display_path(out_dir / "recorded_motions" / s["recorded_file"]),
                   recorded_sha256=s["recorded_sha256"],
                   weight=recorded_weight(float(m["weight"]), rec_dur, src_dur, weight_scale))
    return row


def first_rows(rows: list[dict]) -> list[dict]:
    """Each motion's first manifest row: a motion kept in segments has one per segment, one after
    the other, each starting later (names alone do not tell motions apart: invalid rows repeat them)."""
    out: list[dict] = []
    for before, r in zip([None] + rows[:-1], rows):
        same = before is not None and all(before.get(k) == r.get(k) for k in ("name", "source_path"))
        if same and None not in (before.get("start_time"), r.get("start_time")) and \
                r["start_time"] > before["start_time"]:
            continue
        out.append(r)
    return out


def summarize(iteration: str, rows: list[dict], attempts: list[dict[str, str]], recovery: str = "parc") -> dict:
    """The iteration's counts per motion (a motion kept in segments has a manifest row per segment:
    its first row counts for it), and seconds kept against seconds of valid source. Attempts count
    per start fraction; segment restarts (`recovery`: segments) start anywhere and count together."""
    firsts = first_rows(rows)
    status = Counter(r["status"] for r in firsts)
    valid = sum(1 for r in firsts if r["valid"])
    # merged into the next dataset
    recorded = status["recorded"] + status["recorded_later_start"] + status["recorded_segment"]
    per_class: dict[str, dict] = defaultdict(lambda: {"valid": 0, "recorded": 0})
    for r in firsts:
        if r["valid"]:
            c = per_class[r["class"] or "(none)"]
            c["valid"] += 1
            c["recorded"] += r["status"] in RECORDED_STATUSES
    per_start: dict[str, dict] = defaultdict(lambda: {"attempts": 0, "successes": 0})
    for a in attempts:
        fraction = float(a["start_fraction"])
        p = per_start[f"{fraction:.2f}" if recovery == "parc" or fraction == 0.0 else "restarts"]
        p["attempts"] += 1
        p["successes"] += a["success"] == "true"
    return {
        "iteration": iteration,
        "motions": {"total": len(firsts), "valid": valid, "invalid": len(firsts) - valid, "recorded": recorded,
                    "recorded_full_length": status["recorded"], "recorded_later_start": status["recorded_later_start"],
                    **segment_counts(rows),
                    "failed": status["failed"], "rejected": status["rejected"], "name_clash": status["name_clash"]},
        "success_rate": recorded / valid if valid else 0.0,
        "per_class": {k: {**v, "rate": v["recorded"] / v["valid"]} for k, v in sorted(per_class.items())},
        "per_start_fraction": {k: {**v, "rate": v["successes"] / v["attempts"]} for k, v in sorted(per_start.items())},
        "source_seconds": sum(r["source_duration"] or 0.0 for r in firsts if r["valid"]),
        "recorded_seconds": sum(r["recorded_duration"] or 0.0 for r in rows),
        "fail_reasons": dict(sorted(Counter((r["fail_reason"] or "").split(":")[0] for r in firsts
                                            if r["status"] == "failed").items())),
        "rejected_by": rejected_by(rows),
        "invalid": [{"name": r["name"], "error": r["error"]} for r in rows if not r["valid"]],
    }


def segment_counts(rows: list[dict]) -> dict[str, int]:
    """Motions kept in segments and their segments (record.recovery: segments); nothing when there
    are none, so that a summary of PARC's recovery reads as it did before segments existed."""
    segments = [r for r in rows if r["status"] == "recorded_segment"]
    if not segments:
        return {}
    return {"recorded_in_segments": len({r["name"] for r in segments}), "segments": len(segments)}


def rejected_by(rows: list[dict]) -> dict[str, dict]:
    """Per selection key: the motions that succeeded in simulation but that threshold rejected,
    the worst value among them and the limit; "other" for another reason (a single frame)."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["status"] != "rejected":
            continue
        gate = rejected_gate(r["fail_reason"] or "")
        key, value, limit, unit = gate if gate else ("other", math.nan, math.nan, "")
        g = out.setdefault(key, {"motions": 0, "worst": value, "limit": limit, "unit": unit})
        g["motions"] += 1
        worse = min if key == "min_duration_s" else max
        g["worst"] = worse(g["worst"], value) if gate else value
    return {k: {**v, "worst": None if math.isnan(v["worst"]) else v["worst"],
                "limit": None if math.isnan(v["limit"]) else v["limit"]} for k, v in sorted(out.items())}


def rejected_lines(s: dict) -> list[tuple[str, int, str, str]]:
    """(selection key, motions, worst, limit) rows of the summary's rejections, formatted."""
    return [(k, v["motions"], "" if v["worst"] is None else f"{v['worst']:.3g} {v['unit']}",
             "" if v["limit"] is None else f"{v['limit']:g} {v['unit']}") for k, v in s.get("rejected_by", {}).items()]


REJECTED_ADVICE = ("These succeeded in simulation; a selection threshold kept them out of the next dataset. "
                   "To keep them, raise the key in the config's `selection` section (or set it to null); "
                   "config/README.md says how the defaults were chosen.")


def summary_markdown(s: dict) -> str:
    m = s["motions"]
    lines = [f"# physrec summary: {s['iteration']}", "",
             f"{m['recorded']} of {m['valid']} valid motions recorded ({s['success_rate']:.0%}): "
             f"{m['recorded_full_length']} full length, {m['recorded_later_start']} from a later start"
             + (f", {m['recorded_in_segments']} in {m['segments']} segments" if m.get("segments") else "") + "; "
             f"{m['failed']} failed, {m['rejected']} rejected by selection thresholds, {m['invalid']} invalid"
             + (f", {m['name_clash']} not merged (name already in the base dataset)." if m["name_clash"] else "."),
             f"Recorded {s['recorded_seconds']:.1f} s of {s['source_seconds']:.1f} s of valid source motion.", "",
             "| start fraction | attempts | successes | rate |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['attempts']} | {v['successes']} | {v['rate']:.0%} |" for k, v in s["per_start_fraction"].items()]
    lines += ["", "| class | valid | recorded | rate |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['valid']} | {v['recorded']} | {v['rate']:.0%} |" for k, v in s["per_class"].items()]
    if s["fail_reasons"]:
        lines += ["", "Failure reasons (motions): " + ", ".join(f"{k or 'unknown'} ({v})" for k, v in s["fail_reasons"].items())]
    if s.get("rejected_by"):
        lines += ["", "## Succeeded in simulation, rejected by selection", "", REJECTED_ADVICE, "",
                  "| selection key | motions | worst | limit |", "| --- | --- | --- | --- |"]
        lines += [f"| `{k}` | {n} | {w} | {lim} |" for k, n, w, lim in rejected_lines(s)]
    if s["invalid"]:
        lines += ["", "## Invalid motions", ""] + [f"- `{r['name']}`: {r['error']}" for r in s["invalid"]]
    return "\n".join(lines) + "\n"


def write_trajectories(record_dirs: list[Path], out_dir: Path, wanted: bool,
                       progress: Callable[[str], None] = print) -> None:
    """The iteration's one trajectory file (record.merged_trajectories), every batch's episodes in
    batch order; without it, a file left by an earlier run with it goes, as the workflow no longer
    tracks it."""
    h5 = out_dir / TRAJECTORIES
    if wanted:
        n = merge_trajectories([Path(d) / "rollouts.h5" for d in record_dirs], h5, progress)
        progress(f"{h5}: {n} episodes of {len(record_dirs)} batch(es)")
        return
    for path in (h5.with_suffix(".json"), h5):  # the JSON first: it is what readers open first
        if path.exists():
            path.unlink()
            progress(f"removed {path} (record.merged_trajectories is off)")


def recovery_of(record_dirs: list[Path]) -> str:
    """The iteration's record.recovery, as its recordings say (every batch has the same)."""
    if not record_dirs:
        return "parc"
    info = json.loads((Path(record_dirs[0]) / "rollouts.json").read_text())
    return info["env_info"]["env_kwargs"]["record"].get("recovery", "parc")


def run_merge(iteration: str, manifest: str | Path, plan: str | Path, select_dirs: list[Path],
              record_dirs: list[Path], base_dataset: str | None, weight_scale: float, out_dir: str | Path,
              trajectories: bool = False, progress: Callable[[str], None] = print, integrity_token: str = "") -> dict:
    out = Path(out_dir)
    selected: dict[str, list[dict[str, str]]] = {}
    for d in select_dirs:
        for r in read_tsv_records(Path(d) / "selected.tsv"):
            selected.setdefault(r["motion"], []).append({**r, "_dir": str(d)})
    attempts = [a for d in record_dirs for a in read_tsv_records(Path(d) / "attempts.tsv")]
    rows = merged_rows(read_manifest(manifest), read_plan(plan), selected, out, weight_scale)
    rec_dir = out / "recorded_motions"
    rec_dir.mkdir(parents=True, exist_ok=True)
    base = read_dataset(base_dataset) if base_dataset else []
    base_names = {motion_name(e.path) for e in base}
    entries = list(base)
    for r in rows:
        if r["status"] not in RECORDED_STATUSES:
            continue
        s = next(s for s in selected[r["name"]] if s["recorded_sha256"] == r["recorded_sha256"])
        dst = rec_dir / s["recorded_file"]
        if motion_name(dst) in base_names:
            r.update(status="name_clash", error=f"recorded name '{motion_name(dst)}' is already in the base dataset "
                                                 f"{base_dataset}", recorded_path=None, recorded_sha256=None,
                     recorded_duration=None, weight=None)
            continue
        _link_or_copy(Path(s["_dir"]) / "motions" / s["recorded_file"], dst)
        entries.append(DatasetEntry(file=str(dst.resolve()), path=dst.resolve(), weight=r["weight"], extra={}))
    write_tsv(out / "manifest.tsv", rows, MERGED_COLUMNS)
    summary = summarize(iteration, rows, attempts, recovery_of(record_dirs))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    write_dataset(out / "dataset.yaml", [DatasetEntry(file=str(e.path), path=e.path, weight=e.weight, extra={})
                                         for e in entries])
    write_trajectories(record_dirs, out, trajectories, progress)
    write_integrity(out, integrity_token)
    return summary
