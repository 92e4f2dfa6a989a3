"""The whole run at a glance: one row per iteration, from each iteration's merge outputs.

Answers "how did the PARC loop go across iterations": motions in, recorded (full length or
from a later start), failed, rejected, invalid, seconds of motion in and recorded, and the
size of the dataset handed to the next iteration (its base entries plus the recorded ones).

Several configs may share one results_dir: the summary covers every iteration merged there,
the config's own first (in its order), then the others found on disk (by name), so that no
run hides another's iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from physrec.formats.atomic import atomic_write_text
from physrec.formats.dataset_yaml import read_dataset
from physrec.formats.tables import write_tsv

# Folders under results_dir that hold no iteration.
NOT_ITERATIONS = {"builtin_demo"}

COLUMNS = ["iteration", "tracker", "motions", "valid", "invalid", "recorded", "recorded_full_length",
           "recorded_later_start", "failed", "rejected", "success_rate", "source_seconds", "recorded_seconds",
           "next_dataset_entries", "next_dataset_from_base"]


def summary_row(iteration: str, tracker: str, summary_json: Path, dataset_yaml: Path) -> dict:
    s = json.loads(Path(summary_json).read_text())
    m = s["motions"]
    entries = len(read_dataset(dataset_yaml))
    return {"iteration": iteration, "tracker": tracker, "motions": m["total"], "valid": m["valid"],
            "invalid": m["invalid"], "recorded": m["recorded"], "recorded_full_length": m["recorded_full_length"],
            "recorded_later_start": m["recorded_later_start"], "failed": m["failed"], "rejected": m["rejected"],
            "success_rate": round(float(s["success_rate"]), 4), "source_seconds": round(float(s["source_seconds"]), 3),
            "recorded_seconds": round(float(s["recorded_seconds"]), 3), "next_dataset_entries": entries,
            "next_dataset_from_base": entries - m["recorded"]}


def found_iterations(results_dir: Path, listed: set[str]) -> list[tuple[str, str]]:
    """(name, tracker kind) of every merged iteration under results_dir that is not in `listed`,
    by name; the kind from its first batch's record_env.yaml ("unknown" without a batch)."""
    found = []
    for summary in sorted(Path(results_dir).glob("*/summary.json")):
        it = summary.parent
        if it.name in listed or it.name in NOT_ITERATIONS or not (it / "dataset.yaml").is_file():
            continue
        envs = sorted(it.glob("record/*/record_env.yaml"))
        kind = "unknown"
        if envs:
            env = yaml.load(envs[0].read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            kind = (env.get("tracker") or {}).get("kind", "unknown")
        found.append((it.name, kind))
    return found


def markdown(rows: list[dict], others: list[str] = ()) -> str:
    head = ["iteration", "tracker", "motions in (valid)", "recorded", "full length / later start", "failed",
            "rejected", "invalid", "seconds in → recorded", "next dataset (from base + recorded)"]
    lines = ["# physrec run summary", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['iteration']} | {r['tracker']} | {r['motions']} ({r['valid']}) | {r['recorded']} "
            f"({r['success_rate']:.0%} of valid) | {r['recorded_full_length']} / {r['recorded_later_start']} | "
            f"{r['failed']} | {r['rejected']} | {r['invalid']} | {r['source_seconds']:.1f} s → "
            f"{r['recorded_seconds']:.1f} s | {r['next_dataset_entries']} ({r['next_dataset_from_base']} + "
            f"{r['next_dataset_entries'] - r['next_dataset_from_base']}) |")
    if others:
        lines += ["", f"Also under this results folder, from another config: {', '.join(others)}."]
    return "\n".join(lines) + "\n"


def run_summary(iterations: list[tuple[str, str]], results_dir: str | Path, out_dir: str | Path) -> list[dict]:
    """`iterations`: (name, tracker kind) in config order, each with its merge outputs under
    results_dir/<name>/, then every other merged iteration found there; writes run_summary.tsv
    and run_summary.md to out_dir."""
    res, out = Path(results_dir), Path(out_dir)
    others = found_iterations(res, {name for name, _ in iterations})
    rows = [summary_row(name, tracker, res / name / "summary.json", res / name / "dataset.yaml")
            for name, tracker in [*iterations, *others]]
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "run_summary.tsv", rows, COLUMNS)
    atomic_write_text(out / "run_summary.md", markdown(rows, [name for name, _ in others]))
    return rows
