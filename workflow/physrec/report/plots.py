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

PLOTS = ("success_by_start", "errors_over_time", "durations", "failure_location", "kept_time")
KEPT_TIME_MOTIONS = 30  # bars in kept_time.png: the motions that lost the most seconds


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
    kept_time_plot(plt, iteration, motions, attempts, paths[4])
    plt.close("all")
    return paths


def kept_spans(motions: list[dict[str, str]]) -> dict[str, tuple[float, list[tuple[float, float]], str]]:
    """Per valid motion of the merged manifest: (source seconds, kept (start, end) spans, why none
    or what was not kept), in manifest order; a motion kept in segments has a row per segment."""
    out: dict[str, tuple[float, list[tuple[float, float]], str]] = {}
    for m in motions:
        if m["valid"] != "true":
            continue
        source, spans, why = out.get(m["name"], (float(m["source_duration"]), [], m["fail_reason"] or ""))
        if m["status"] in RECORDED_STATUSES:
            spans.append((float(m["start_time"]), float(m["end_time"])))
        out[m["name"]] = (source, spans, why)
    return out


def gaps(source: float, spans: list[tuple[float, float]], least: float = 1e-6) -> list[tuple[float, float]]:
    """The parts of [0, source] that no kept span covers."""
    found, at = [], 0.0
    for start, end in sorted(spans):
        if start - at > least:
            found.append((at, start))
        at = max(at, end)
    if source - at > least:
        found.append((at, source))
    return found


def gap_reason(attempts: list[dict[str, str]], start: float, motion_reason: str) -> str:
    """Why the source time from `start` was lost: the termination of the attempt that was tracking
    it (the latest to start at or before it), or the motion's reason (a selection threshold)."""
    tracking = [a for a in attempts if float(a["start_time"]) <= start + 1e-6]
    a = max(tracking, key=lambda a: float(a["start_time"]), default=None)
    if a is not None and a["success"] != "true" and a["fail_reason"]:
        return a["fail_reason"].split(":")[0]
    return motion_reason.split(" ")[0] if motion_reason else "not kept"


def kept_time_plot(plt, iteration: str, motions: list[dict[str, str]], attempts: list[dict[str, str]],
                   out: Path) -> None:
    """Per motion a bar of its source time with the kept spans on it (green) and each lost part
    (red) labelled with why it was lost; the KEPT_TIME_MOTIONS motions that lost the most seconds."""
    spans = kept_spans(motions)
    by_motion: dict[str, list[dict[str, str]]] = defaultdict(list)
    for a in attempts:
        by_motion[a["motion"]].append(a)
    lost = {n: src - sum(e - s for s, e in kept) for n, (src, kept, _) in spans.items()}
    shown = sorted(spans, key=lambda n: (-lost[n], n))[:KEPT_TIME_MOTIONS]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * max(1, len(shown))))
    for y, name in enumerate(shown):
        source, kept, why = spans[name]
        ax.barh(y, source, color="#dddddd", height=0.7)
        for start, end in kept:
            ax.barh(y, end - start, left=start, color="#3a7d44", height=0.7)
        for start, end in gaps(source, kept):
            ax.barh(y, end - start, left=start, color="#c0392b", height=0.3)
            ax.text((start + end) / 2, y + 0.38, gap_reason(by_motion[name], start, why), ha="center", va="bottom",
                    fontsize=6)
    more = f", {len(spans) - len(shown)} more not shown" if len(spans) > len(shown) else ""
    ax.set(yticks=range(len(shown)), yticklabels=shown, xlabel="source time (s)", ylim=(len(shown) - 0.4, -0.8),
           title=f"{iteration}: source time kept (green) and lost (red, why){more}")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _save(fig, out)


def seconds_per_class(motions: list[dict[str, str]]) -> dict[str, tuple[float, float]]:
    """Per class: (seconds of valid source, seconds kept), from the merged manifest."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    seen: set[str] = set()
    for m in motions:
        if m["valid"] != "true":
            continue
        c = out[m["class"] or "(none)"]
        if m["name"] not in seen:
            seen.add(m["name"])
            c[0] += float(m["source_duration"])
        c[1] += float(m["recorded_duration"] or 0.0)
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def summary_html(summary_json: Path, out: Path, manifest_tsv: Path | None = None) -> Path:
    """The iteration's summary.json as a small HTML page of tables (the report shows it inline),
    with the seconds kept per class from its manifest."""
    from html import escape
    s = json.loads(Path(summary_json).read_text())
    m = s["motions"]
    segments = f", {m['recorded_in_segments']} in {m['segments']} segments" if m.get("segments") else ""
    parts = [f"<h2>{escape(s['iteration'])}</h2>",
             f"<p>{m['recorded']} of {m['valid']} valid motions recorded ({s['success_rate']:.0%}): "
             f"{m['recorded_full_length']} full length, {m['recorded_later_start']} from a later start{segments}; "
             f"{m['failed']} failed, {m['rejected']} rejected by selection thresholds, {m['invalid']} invalid. "
             f"Recorded {s['recorded_seconds']:.1f} s of {s['source_seconds']:.1f} s of valid source motion.</p>",
             table(["class", "valid", "recorded", "rate"],
                   [[c, v["valid"], v["recorded"], f"{v['rate']:.0%}"] for c, v in s["per_class"].items()]),
             *([table(["class", "source seconds", "kept seconds", "kept"],
                      [[c, f"{src:.1f}", f"{kept:.1f}", f"{kept / src:.0%}" if src else ""]
                       for c, (src, kept) in seconds_per_class(read_tsv_records(manifest_tsv)).items()])]
               if manifest_tsv is not None else []),
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
