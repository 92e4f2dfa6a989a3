"""The plots and summary page of one iteration for the Snakemake report: how did the recording go.

Read from the iteration's merge outputs (summary.json, manifest.tsv) and its record
folders (attempts.tsv, rollouts.h5). matplotlib with the Agg backend: no display needed.
"""

from __future__ import annotations

from collections import defaultdict

import json
from pathlib import Path

import numpy as np

from physrec.formats.rollouts import open_rollouts
from physrec.formats.atomic import atomic_output
from physrec.formats.tables import read_tsv_records
from physrec.report.html import table, write_page
from physrec.stages.merge import RECORDED_STATUSES, REJECTED_ADVICE, rejected_lines

PLOTS = ("success_by_start", "errors_over_time", "durations", "failure_location")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same bytes
    fig.clf()


def _fraction(text: str) -> str:
    """A start fraction as the merged manifest writes it (attempts.tsv and the manifest spell them apart)."""
    return str(float(text))


def iteration_plots(iteration: str, summary_json: Path, manifest_tsv: Path, record_dirs: list[Path],
                    out_dir: Path) -> list[Path]:
    """Write the PLOTS of one iteration as PNGs into out_dir; returns their paths."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = json.loads(Path(summary_json).read_text())
    motions = read_tsv_records(manifest_tsv)
    by_dir = {Path(d): read_tsv_records(Path(d) / "attempts.tsv") for d in record_dirs}
    attempts = [a for rows in by_dir.values() for a in rows]
    paths = [out_dir / f"{name}.png" for name in PLOTS]

    fig, ax = plt.subplots(figsize=(6, 3.5))
    starts = summary["per_start_fraction"]
    x = np.arange(len(starts))
    ax.bar(x - 0.2, [v["attempts"] for v in starts.values()], 0.4, label="attempts", color="#9db4d0")
    ax.bar(x + 0.2, [v["successes"] for v in starts.values()], 0.4, label="successes", color="#3a7d44")
    ax.set(xticks=x, xticklabels=list(starts), xlabel="start fraction", ylabel="attempts",
           title=f"{iteration}: success by start fraction")
    ax.legend()
    fig.tight_layout()
    _save(fig, paths[0])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    # "kept" as selection means it: the attempt that became the recorded motion.
    kept = {(m["name"], _fraction(m["start_fraction"])) for m in motions if m["status"] in RECORDED_STATUSES}
    classes = {"kept": "#3a7d44", "succeeded, not kept": "#e08e0b", "failed": "#c0392b"}
    unlabelled = dict(classes)
    for d, rows in by_dir.items():  # each batch's rollouts.h5 opened once
        with open_rollouts(d / "rollouts.h5") as f:
            for a in rows:
                g = f[a["attempt"]]
                err, t = g["tracking_errors"][()][:, 3], g["ref_time"][()][1:]
                which = ("kept" if (a["motion"], _fraction(a["start_fraction"])) in kept else
                         "succeeded, not kept" if a["success"] == "true" else "failed")
                ax.plot(t, err, color=classes[which], alpha=0.6, lw=1, label=which if unlabelled.pop(which, None)
                        else None)
    ax.set(xlabel="motion time (s)", ylabel="mean body position error (m)", title=f"{iteration}: tracking error")
    if attempts:
        ax.legend()
    fig.tight_layout()
    _save(fig, paths[1])

    fig, ax = plt.subplots(figsize=(4.5, 4))
    valid = [m for m in motions if m["valid"] == "true"]
    kept_seconds: dict[str, float] = defaultdict(float)  # a motion kept in segments: their sum
    for m in valid:
        kept_seconds[m["name"]] += float(m["recorded_duration"] or 0.0)
    source_seconds = {m["name"]: float(m["source_duration"]) for m in valid}
    src = [source_seconds[n] for n in kept_seconds]
    rec = list(kept_seconds.values())
    ax.scatter(src, rec, color="#2c6fbb")
    top = max(src + [1.0])
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="full length")
    ax.set(xlabel="source duration (s)", ylabel="recorded duration (s)", title=f"{iteration}: recorded vs source")
    ax.legend()
    fig.tight_layout()
    _save(fig, paths[2])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    lengths = {m["name"]: float(m["source_duration"]) for m in valid}
    where = [float(a["end_time"]) / lengths[a["motion"]] for a in attempts
             if a["success"] != "true" and lengths.get(a["motion"])]
    ax.hist(where, bins=np.linspace(0, 1, 11), color="#c0392b")
    ax.set(xlim=(0, 1), xlabel="where the attempt ended (fraction of its motion)", ylabel="failed attempts",
           title=f"{iteration}: where failures happen ({len(where)} failed attempts)")
    fig.tight_layout()
    _save(fig, paths[3])
    plt.close("all")
    return paths


def summary_html(summary_json: Path, out: Path) -> Path:
    """The iteration's summary.json as a small HTML page of tables (the report shows it inline)."""
    from html import escape
    s = json.loads(Path(summary_json).read_text())
    m = s["motions"]
    parts = [f"<h2>{escape(s['iteration'])}</h2>",
             f"<p>{m['recorded']} of {m['valid']} valid motions recorded ({s['success_rate']:.0%}): "
             f"{m['recorded_full_length']} full length, {m['recorded_later_start']} from a later start; "
             f"{m['failed']} failed, {m['rejected']} rejected by selection thresholds, {m['invalid']} invalid. "
             f"Recorded {s['recorded_seconds']:.1f} s of {s['source_seconds']:.1f} s of valid source motion.</p>",
             table(["class", "valid", "recorded", "rate"],
                   [[c, v["valid"], v["recorded"], f"{v['rate']:.0%}"] for c, v in s["per_class"].items()]),
             table(["start fraction", "attempts", "successes", "rate"],
                   [[f, v["attempts"], v["successes"], f"{v['rate']:.0%}"] for f, v in s["per_start_fraction"].items()]),
             table(["failure reason", "motions"], [[r, n] for r, n in s["fail_reasons"].items()])]
    if s.get("rejected_by"):
        parts += [f"<h3>Succeeded in simulation, rejected by selection</h3><p>{escape(REJECTED_ADVICE)}</p>",
                  table(["selection key", "motions", "worst", "limit"], [list(r) for r in rejected_lines(s)])]
    return write_page(out, parts)


def run_summary_plot(rows: list[dict], out: Path) -> Path:
    """The run across iterations (run_summary.tsv's rows): per iteration the motions in, recorded
    full length and from a later start, and the dataset handed on; seconds in and recorded."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(rows))
    names = [r["iteration"] for r in rows]
    left.bar(x - 0.27, [r["valid"] for r in rows], 0.27, label="valid motions in", color="#9db4d0")
    left.bar(x, [r["recorded_full_length"] for r in rows], 0.27, label="recorded, full length", color="#3a7d44")
    left.bar(x, [r["recorded_later_start"] for r in rows], 0.27, bottom=[r["recorded_full_length"] for r in rows],
             label="recorded, later start", color="#94c973")
    left.bar(x + 0.27, [r["next_dataset_entries"] for r in rows], 0.27, label="next dataset", color="#c9a66b")
    left.set(xticks=x, xticklabels=names, ylabel="motions", title="motions per iteration")
    left.legend(fontsize=7)
    right.bar(x - 0.2, [r["source_seconds"] for r in rows], 0.4, label="valid source", color="#9db4d0")
    right.bar(x + 0.2, [r["recorded_seconds"] for r in rows], 0.4, label="recorded", color="#3a7d44")
    right.set(xticks=x, xticklabels=names, ylabel="seconds of motion", title="seconds per iteration")
    right.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out)
    return out
