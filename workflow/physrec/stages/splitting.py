"""Stable batch assignment: content-defined chunking of motion names.

Motions are ordered by the hash of their name; a motion whose hash passes a 1-in-``batch_size``
test ends a batch (a "run"). Whether a motion is a cut point depends only on its own name, so
adding a motion changes only the run it lands in (or cuts that run in two): every other batch
keeps its members and id, and its recordings are reused. A run longer than
``MAX_FACTOR * batch_size`` is cut again the same way with a differently salted hash, which
depends on that run's members alone, so the guarantee holds at every level.
"""

from __future__ import annotations

import hashlib
from collections import Counter

MAX_FACTOR = 4
MAX_LEVELS = 8  # a run still too long after this many levels stays whole (odds below e^-32)
_NO_CUT_ID = "b0000000000"

Keyed = list[tuple[str, str]]  # (key, name), sorted by key


class PlanError(ValueError):
    """Motions that cannot be split into batches, or a batch the plan does not hold."""


def name_key(name: str, level: int = 0) -> str:
    """Hex SHA-256 of the motion name (salted by level for the cuts of long runs)."""
    text = name if level == 0 else f"physrec-split-{level}:{name}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_cut(name: str, key: str, level: int, batch_size: int) -> bool:
    k = key if level == 0 else name_key(name, level)
    return int(k[16:32], 16) % batch_size == 0


def _runs(members: Keyed, batch_size: int, level: int) -> list[tuple[str, Keyed]]:
    """Split key-ordered members after each cut point; ids come from the run's last member."""
    cuts = [i for i, (key, name) in enumerate(members) if _is_cut(name, key, level, batch_size)]
    if level == 0:
        if not cuts:
            return [(_NO_CUT_ID, members)] if members else []
        # Circular: the run ending at the first cut point starts after the last cut point.
        starts = [cuts[-1] + 1 - len(members)] + [c + 1 for c in cuts[:-1]]
        return [("b" + members[end][0][:10], [members[i] for i in range(start, end + 1)])
                for start, end in zip(starts, cuts, strict=True)]
    ends = cuts if cuts and cuts[-1] == len(members) - 1 else cuts + [len(members) - 1]
    starts = [0] + [e + 1 for e in ends[:-1]]
    return [("b" + name_key(members[end][1], level)[:10], members[start:end + 1])
            for start, end in zip(starts, ends, strict=True)]


def _batches(members: Keyed, batch_size: int, level: int) -> list[tuple[str, Keyed]]:
    out = []
    for run_id, run in _runs(members, batch_size, level):
        if len(run) > MAX_FACTOR * batch_size and level + 1 < MAX_LEVELS:
            out += _batches(run, batch_size, level + 1)
        else:
            out.append((run_id, run))
    return out


def plan_batches(names: list[str], batch_size: int) -> dict[str, list[str]]:
    """Map batch id -> member names (ordered by key), sorted by batch id; a pure function of the input."""
    if batch_size < 1:
        raise PlanError(f"batch_size must be >= 1, got {batch_size}")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise PlanError(f"duplicate motion names: {', '.join(dupes[:10])}")
    keyed = sorted((name_key(n), n) for n in names)
    batches: dict[str, list[str]] = {}
    for batch_id, members in _batches(keyed, batch_size, 0):
        if batch_id in batches:
            raise PlanError(f"batch id collision on {batch_id}; use a different batch_size")
        batches[batch_id] = [name for _, name in sorted(members)]
    return dict(sorted(batches.items()))

