"""Progress of a record job's passes: plain lines in its log, and a progress bar where its
output is a terminal.

A line, at a pass's end and at most every 10 s before, says the attempts ended, the
successes, the rate (motion-seconds simulated per wall-second) and the time left at that
rate. The bar (tqdm) counts control steps of the pass. PHYSREC_PROGRESS=bar or lines
overrides the terminal check (several jobs writing bars to one terminal garble each other).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Iterator


class PhaseTimes:
    """Wall seconds of a job's phases, for its log: on a GPU the simulation of thousands of
    motions can take less time than reading them and writing what was recorded; inside the
    recorder, where its time goes (physics, policy, observation, termination, writing)."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def lap(self, name: str, since: float) -> float:
        """Adds the time since `since` (time.perf_counter()) to `name`; returns now, for the next lap."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - since
        return now

    def spread(self, since: float, parts: list[dict[str, float]]) -> float:
        """Adds the wall time since `since` to the phases of work done in parallel (`parts`: each
        thread's seconds per phase), in proportion to their summed seconds; returns now."""
        now = time.perf_counter()
        summed: dict[str, float] = {}
        for part in parts:
            for k, v in part.items():
                summed[k] = summed.get(k, 0.0) + v
        total = sum(summed.values())
        for k, v in summed.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + (now - since) * (v / total if total > 0 else 1 / len(summed))
        return now

    def add(self, other: "PhaseTimes") -> None:
        for k, v in other.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def line(self) -> str:
        """`<total> s (<phase> <s> s, ...)`, the phases under 0.05 s left out."""
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items() if v >= 0.05)
        return f"{sum(self.seconds.values()):.1f} s" + (f" ({parts})" if parts else "")


def bar_wanted() -> bool:
    choice = os.environ.get("PHYSREC_PROGRESS", "auto")
    return choice == "bar" or (choice != "lines" and sys.stderr.isatty())


@contextlib.contextmanager
def lines_above_bars() -> Iterator[None]:
    """Log lines to the terminal go above the progress bar instead of through it."""
    if not bar_wanted():
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm
    with logging_redirect_tqdm():
        yield


class PassProgress:
    """The progress of one pass of `total` attempts, told to `say` (the job's log)."""

    def __init__(self, say: Callable[[str], None], label: str, total: int, every: float = 10.0) -> None:
        self.say, self.label, self.total, self.every = say, label, total, every
        self.done = self.succeeded = 0
        self.start = self.last = time.perf_counter()
        self.step = self.steps = 0
        self.first: tuple[float, int] | None = None  # (time, step) of the first simulator call
        self.motion_seconds = 0.0
        self.bar: Any = None
        if bar_wanted():
            from tqdm import tqdm
            self.bar = tqdm(desc=label.split(" (")[0], unit="step", leave=False, dynamic_ncols=True, file=sys.stderr)

    def __call__(self, env: int, success: bool) -> None:
        """An attempt ended."""
        self.done += 1
        self.succeeded += success
        if self.done == self.total:
            self._say(time.perf_counter())
            if self.bar is not None:
                self.bar.close()
        else:
            self._postfix(time.perf_counter())

    def tick(self, step: int, steps: int, active: int, dt: float) -> None:
        """Called by a pass after each simulator call: `active` environments simulated up to
        control step `step` of at most `steps`."""
        self.motion_seconds += active * (step - self.step) * dt
        now = time.perf_counter()
        if self.first is None:  # a planner searched before this: its time is not this loop's rate
            self.first = (now, self.step)
        self.step, self.steps = step, steps
        if self.bar is not None:
            self.bar.total = steps
            self.bar.update(step - self.bar.n)
            self._postfix(now)
        if now - self.last > self.every and self.done < self.total:
            self._say(now)

    def _rate(self, now: float) -> float:
        return self.motion_seconds / max(now - self.start, 1e-9)

    def _postfix(self, now: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.total} ended, {self.succeeded} ok, "
                                     f"{self._rate(now):.1f} motion-s/s", refresh=False)

    def _say(self, now: float) -> None:
        self.last = now
        line = f"{self.label}: {self.done}/{self.total} done, {self.succeeded} succeeded"
        if self.done < self.total and self.first is not None and self.step > self.first[1]:
            left = (now - self.first[0]) * (self.steps - self.step) / (self.step - self.first[1])
            line += f"; step {self.step}/{self.steps}, {self._rate(now):.1f} motion-s/s, ~{left:.0f} s left"
        self.say(line)
