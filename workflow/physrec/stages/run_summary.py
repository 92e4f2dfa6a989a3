"""The whole run at a glance: one row per iteration, from each iteration's merge outputs.

Answers "how did the PARC loop go across iterations": motions in, recorded (full length or
from a later start), failed, rejected, invalid, seconds of motion in and recorded, and the
size of the dataset handed to the next iteration (its base entries plus the recorded ones).
"""

from __future__ import annotations

import json
from pathlib import Path

from physrec.formats.atomic import atomic_write_text
from physrec.formats.dataset_yaml import read_dataset
from physrec.formats.tables import write_tsv

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


def markdown(rows: list[dict]) -> str:
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
    return "\n".join(lines) + "\n"


def run_summary(iterations: list[tuple[str, str]], results_dir: str | Path, out_dir: str | Path) -> list[dict]:
    """`iterations`: (name, tracker kind) in config order, each with its merge outputs under
    results_dir/<name>/; writes run_summary.tsv and run_summary.md to out_dir."""
    res, out = Path(results_dir), Path(out_dir)
    rows = [summary_row(name, tracker, res / name / "summary.json", res / name / "dataset.yaml")
            for name, tracker in iterations]
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "run_summary.tsv", rows, COLUMNS)
    atomic_write_text(out / "run_summary.md", markdown(rows))
    return rows
