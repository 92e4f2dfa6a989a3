"""A record job's memory is bounded by its plan (recording.memory): a pass's motions run in
groups whose buffers fit the pass budget, and each group's attempts go to rollouts.h5 as it
ends. Measured as the peak resident memory of a recording in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("peak_rss_job.py")
BUDGET = 4_000_000  # bytes: two of the 15-s motions below per group
NO_GROUPS = 10**12


def _peak(out: Path, budget: int) -> dict:
    done = subprocess.run([sys.executable, str(JOB), str(out), str(budget), "12", "15"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_a_record_jobs_peak_memory_stays_within_its_plan(tmp_path):
    """12 standing motions of 15 s at 120 control steps a second (1800 frames each): within the
    bound of a 4-MB pass budget; with one group for the pass (grouping disabled) the same
    recording exceeds that bound (measured 6 and 33 MB against 20, 2026-12-07, this 2-core VM),
    and both write the same bytes."""
    grouped = _peak(tmp_path / "grouped.h5", BUDGET)
    assert grouped["extra_mb"] <= grouped["bound_mb"], grouped
    whole = _peak(tmp_path / "whole.h5", NO_GROUPS)
    assert whole["extra_mb"] > grouped["bound_mb"], (whole, grouped)
    assert (tmp_path / "grouped.h5").read_bytes() == (tmp_path / "whole.h5").read_bytes()
