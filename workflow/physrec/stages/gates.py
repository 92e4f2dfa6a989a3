"""Selection's quality thresholds: which attempts.tsv column each selection key bounds, the rule
(rejection) over an attempt's or a segment's kept frames, and the reason a rejection writes, read
back by merge's summary (kept apart from select so that merge needs neither MuJoCo nor h5py)."""

from __future__ import annotations

import math
import re

import numpy as np

# The quality gates: (attempts.tsv column, selection key, unit of both).
GATES = (("mean_body_pos_error", "max_mean_body_pos_error_m", "m"),
         ("max_root_pos_error", "max_root_pos_error_m", "m"),
         ("max_root_rot_error_deg", "max_root_rot_error_deg", "deg"))
_REJECTED = re.compile(r"(\w+) (\S+) (m|deg) > (\S+) (?:m|deg)")
_SHORT = re.compile(r"recorded duration (\S+) s < (\S+) s")


def gate_reason(column: str, value: float, unit: str, limit: float) -> str:
    return f"{column} {value:.3f} {unit} > {limit} {unit}"


def short_reason(duration: float, least: float) -> str:
    return f"recorded duration {duration:.2f} s < {least} s"


def rejected_gate(reason: str) -> tuple[str, float, float, str] | None:
    """(selection key, value, limit, unit) of a rejection by a selection threshold, read back from
    the reason `rejection` wrote (None for another reason)."""
    m = _SHORT.fullmatch(reason or "")
    if m:
        return "min_duration_s", float(m.group(1)), float(m.group(2)), "s"
    m = _REJECTED.fullmatch(reason or "")
    key = next((k for column, k, _ in GATES if m and column == m.group(1)), None)
    return (key, float(m.group(2)), float(m.group(4)), m.group(3)) if key else None


def kept_error_summary(errors: np.ndarray, kept_steps: int) -> dict[str, float]:
    """Worst and mean tracking errors (the gates' attempts.tsv columns) over the first `kept_steps`
    steps: those a recorded motion, or a segment of one, holds."""
    e = errors[:kept_steps]
    if not len(e):
        return {"max_root_pos_error": 0.0, "max_root_rot_error": 0.0, "mean_body_pos_error": 0.0}
    return {"max_root_pos_error": float(e[:, 0].max()), "max_root_rot_error": float(e[:, 1].max()),
            "mean_body_pos_error": float(e[:, 3].mean())}


def error_columns(summary: dict[str, float]) -> dict[str, float]:
    """kept_error_summary as the tables write it (attempts.tsv, selected.tsv, a segment's row): the
    rotation in degrees, the unit the config and the messages use, named in the column."""
    out = {k: v for k, v in summary.items() if k != "max_root_rot_error"}
    out["max_root_rot_error_deg"] = math.degrees(summary["max_root_rot_error"])
    return out


def recorded_steps(attempt: dict[str, str], control_hz: int) -> int:
    """Control steps a recording of `attempt` holds after its first frame: those before a termination
    (to kept_end_time) that end by its motion's end. An attempt's last step can pass the end (the
    reference stands still there, kept_end_time is clamped to it); a recording never lasts longer
    than its source, so it stops at the last step within it."""
    return math.floor((float(attempt["kept_end_time"]) - float(attempt["start_time"])) * control_hz + 1e-6)


def rejection(attempt: dict[str, str], sel: dict, control_hz: int) -> str:
    """Why a successful attempt fails the quality thresholds ("" if it passes).

    The errors are over the frames a recorded motion would hold (none at or past a
    termination); see config/README.md for how the default thresholds were chosen.
    """
    for column, key, unit in GATES:
        limit = sel.get(key)
        value = float(attempt[column])
        if not math.isfinite(value):  # NaN passes every `>`: a diverged attempt is never kept
            return f"{column} is {value} (a non-finite state)"
        if limit is not None and value > limit:
            return gate_reason(column, value, unit, limit)
    steps = recorded_steps(attempt, control_hz)
    if steps < 1:
        return "a recording would hold a single frame"
    duration = steps / control_hz
    if duration < sel.get("min_duration_s", 0.0):
        return short_reason(duration, sel["min_duration_s"])
    return ""
