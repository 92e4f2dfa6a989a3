"""Selection's quality thresholds: which attempts.tsv column each selection key bounds, and the
reason a rejection writes, read back by merge's summary (kept apart from select so that merge
needs neither MuJoCo nor h5py)."""

from __future__ import annotations

import re

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
