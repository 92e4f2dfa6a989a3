"""Selection under record.recovery: segments: every clean piece of a motion's chain of attempts.

The recorder restarts each failed attempt where it ended (recording.plan.pass_starts), so a
motion's attempts tile it without overlap. Each attempt gives at most one segment: a success
all of it, a failure its prefix up to `selection.segment_margin_s` before the failure's onset,
the last frame before the termination at which the tracking was still healthy (ONSET_*). A
segment is kept when it lasts at least record.min_segment_s (a whole motion tracked from its
first frame is kept however short, as PARC's selection keeps it) and passes the same quality gates
as a whole motion, its errors taken over its own frames. The thresholds and the margin come
from failures measured in docs/benchmarks.md ("Segment recovery, issue 23").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from physrec.stages.gates import error_columns, kept_error_summary, recorded_steps, rejection

# A frame tracks healthily while both errors are at most these (the mean body error: selection's
# default gate). On pd's 22 failures on the demo and PARC's samples the last healthy frame lies
# 0.27-0.97 s before the termination and, but for two (by at most 0.1 s: the default margin),
# before the root height leaves the reference's (docs/benchmarks.md).
ONSET_BODY_ERROR_M = 0.1
ONSET_ROOT_POS_ERROR_M = 0.1
FULL_LENGTH = "recorded"  # a segment that is the whole motion, tracked from its first frame
SEGMENT = "recorded_segment"


@dataclass(frozen=True)
class Segment:
    attempt: dict[str, str]  # the attempts.tsv row it is cut from
    steps: int  # control steps after its first frame
    row: dict[str, str]  # the attempt's row as if it had ended with the segment: what the gates read
    status: str


def onset_frame(errors: np.ndarray, steps: int) -> int:
    """The frame of a failed attempt of `steps` control steps (its last frame terminated) after
    which its errors diverge for good: the last healthy frame before the termination (frame 0,
    the reset onto the reference, always is). errors[k] are frame k + 1's."""
    e = errors[:max(0, steps - 1)]
    healthy = np.flatnonzero((e[:, 3] <= ONSET_BODY_ERROR_M) & (e[:, 0] <= ONSET_ROOT_POS_ERROR_M))
    return int(healthy[-1]) + 1 if len(healthy) else 0


def segment_of(attempt: dict[str, str], errors: np.ndarray | None, control_hz: int, margin_s: float) -> Segment:
    """The segment an attempt gives: all its recordable steps when it succeeded (its attempts.tsv
    row, as PARC's selection reads it), else those up to `margin_s` before its failure's onset
    (`errors`, a failed attempt's tracking errors, are needed only then)."""
    first = float(attempt["start_fraction"]) == 0.0
    if attempt["success"] == "true":
        return Segment(attempt, recorded_steps(attempt, control_hz), attempt, FULL_LENGTH if first else SEGMENT)
    assert errors is not None
    cut = onset_frame(errors, int(attempt["steps"])) - int(round(margin_s * control_hz))
    steps = max(0, min(cut, int(attempt["kept_steps"])))
    row = {**attempt, **{k: repr(v) for k, v in error_columns(kept_error_summary(errors, steps)).items()},
           "kept_end_time": repr(round(float(attempt["start_time"]) + steps / control_hz, 9))}
    return Segment(attempt, steps, row, SEGMENT)


def choose_segments(attempts: list[dict[str, str]], errors: Callable[[dict[str, str]], np.ndarray], sel: dict,
                    min_segment_s: float, control_hz: int) -> tuple[str, list[Segment], str]:
    """(status, kept segments in source order, reason) for one motion's attempts; `errors` reads an
    attempt's tracking errors (read for failed attempts only). With none kept, the status and reason say why (as select.choose's)."""
    ordered = sorted(attempts, key=lambda a: float(a["start_time"]))
    kept, rejected = [], ""
    for a in ordered:
        s = segment_of(a, None if a["success"] == "true" else errors(a), control_hz, sel["segment_margin_s"])
        if s.steps < 1 or (s.status == SEGMENT and s.steps / control_hz < min_segment_s - 1e-9):
            continue
        why = rejection(s.row, sel, control_hz)
        if why:
            rejected = rejected or why
            continue
        kept.append(s)
    if kept:
        return kept[0].status, kept, ""
    if rejected:
        return "rejected", [], rejected
    return "failed", [], (ordered[0]["fail_reason"] if ordered else "no attempt")
