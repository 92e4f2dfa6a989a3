"""The videos of one batch for the Snakemake report: one MP4 per motion, of the attempt that
selection kept (`kept/<motion>.mp4`), or for a motion that was not kept, of its attempt from
the start, which shows where and how tracking failed (`failed/<motion>.mp4`). Beside each MP4
a page `<motion>.html` holds the video inline with what happened, for the report to show.

`report.videos` picks which (kept, failed, all, none) and `report.max_videos` caps how many of
each per iteration (spread over its batches, render/__init__.py), so a large dataset's report
stays a sample. Under `kept`, a batch that keeps no motion (every motion failed or was rejected,
as PARC's parkour under `pd`) renders its failures instead: a report with no video would not
show why.
"""

from __future__ import annotations

import base64
import logging
from html import escape
from pathlib import Path

from physrec.formats.tables import read_tsv_records
from physrec.formats.text import fitting_stem
from physrec.render import VIDEO_KINDS
from physrec.render.video import render_attempt
from physrec.report.html import table, write_page
from physrec.stages.merge import RECORDED_STATUSES
from physrec.stages.record_folder import RecordFolder

log = logging.getLogger("physrec")
_FACTS = ("start_fraction", "start_time", "end_time", "steps", "success", "fail_reason", "max_root_pos_error",
          "max_root_rot_error_deg", "mean_body_pos_error")


def videos_to_render(record_dir: str | Path, selected_tsv: str | Path, which: str,
                     per_batch: int | None) -> dict[str, list[tuple[dict, str]]]:
    """Per kind, (selected.tsv row, attempt) pairs to render, at most `per_batch` of each."""
    episodes = RecordFolder(record_dir).episodes
    first_attempt: dict[str, str] = {}
    for name, ep in sorted(episodes.items(), key=lambda kv: (kv[1]["start_time"], kv[1]["episode_id"])):
        first_attempt.setdefault(ep["motion"], name)
    rows = read_tsv_records(selected_tsv)
    wanted = {"kept", "failed"} if which == "all" else {which}
    if which == "kept" and not any(row["status"] in RECORDED_STATUSES for row in rows):
        wanted = {"failed"}  # nothing kept: show why
    chosen: dict[str, list[tuple[dict, str]]] = {kind: [] for kind in VIDEO_KINDS[which]}
    shown: set[str] = set()
    for row in rows:
        kind = "kept" if row["status"] in RECORDED_STATUSES else "failed"
        if row["motion"] in shown:  # a motion kept in segments: its first one (a page per motion)
            continue
        shown.add(row["motion"])
        if kind in wanted and (per_batch is None or len(chosen[kind]) < per_batch):
            chosen[kind].append((row, row["attempt"] if kind == "kept" else first_attempt[row["motion"]]))
    return chosen


def shown_span(attempt: dict, max_seconds: float | None, tail: bool) -> str:
    """What part of the attempt a video capped at `max_seconds` shows, in motion time ("" for all)."""
    start, end = float(attempt["start_time"]), float(attempt["end_time"])
    if not max_seconds or end - start <= max_seconds:
        return ""
    first, last = (end - max_seconds, end) if tail else (start, start + max_seconds)
    return (f"The video shows {first:.1f}-{last:.1f} s of this attempt's {start:.1f}-{end:.1f} s "
            f"(report.max_video_s); the table covers the whole attempt.")


def video_page(mp4: Path, row: dict, attempt: dict, batch: str, shown: str = "") -> Path:
    """`<motion>.html` beside the MP4: the video embedded (the report is one self-contained file)
    and the attempt's outcome and errors."""
    data = base64.b64encode(mp4.read_bytes()).decode("ascii")
    facts = [["motion", row["motion"]], ["status", row["status"]], ["batch", batch], ["attempt", attempt["attempt"]]]
    facts += [[k, attempt[k]] for k in _FACTS if attempt.get(k) not in (None, "")]
    parts = [f"<h3>{escape(row['motion'])}: {escape(row['status'])}</h3>",
             f"<video controls autoplay loop muted playsinline src='data:video/mp4;base64,{data}'></video>",
             "<p>The simulated character (grey) and its kinematic reference (translucent blue) on the motion's "
             "terrain; errors in metres and degrees.</p>", *([f"<p>{escape(shown)}</p>"] if shown else []),
             table(["", ""], facts)]
    return write_page(mp4.with_suffix(".html"), parts)


def batch_videos(record_dir: str | Path, selected_tsv: str | Path, which: str, per_batch: int | None,
                 out_dir: str | Path, width: int, height: int, renderer_kind: str = "opengl",
                 max_seconds: float | None = None) -> list[Path]:
    """Render a batch's videos into out_dir/<kind>/<motion>.mp4 and .html (every kind's folder
    is made, empty when nothing is to be shown); returns the MP4s' paths. Each video lasts at
    most `max_seconds`: a kept motion's first seconds, a failure's last (where it fails)."""
    plan = videos_to_render(record_dir, selected_tsv, which, per_batch)
    attempts = {a["attempt"]: a for a in read_tsv_records(Path(record_dir) / "attempts.tsv")}
    total, written = sum(len(v) for v in plan.values()), []
    for kind, pairs in plan.items():
        (Path(out_dir) / kind).mkdir(parents=True, exist_ok=True)
        for row, attempt in pairs:
            stem = fitting_stem(row["motion"], ".html")  # a motion's name can fill a file name
            tail = kind == "failed"
            mp4 = render_attempt(record_dir, attempt, Path(out_dir) / kind / f"{stem}.mp4", width, height,
                                 renderer_kind, max_seconds, tail)
            video_page(mp4, row, attempts[attempt], Path(record_dir).name,
                       shown_span(attempts[attempt], max_seconds, tail))
            written.append(mp4)
            log.info("[%d/%d] %s video of %s (%s): %s", len(written), total, kind, row["motion"], attempt, mp4)
    return written
