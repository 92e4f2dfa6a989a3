"""Stable batch assignment: content-defined chunking of motion names.

Motions are ordered by the hash of their name; a motion whose hash passes a 1-in-``batch_size``
test ends a batch. Whether a motion is a cut point depends only on its own name, so adding a
motion changes only the batch it lands in (and splits that one batch if it is itself a cut
point): every other batch keeps its members and id, and its recordings can be reused.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

MAX_FACTOR = 4
_NO_CUT_ID = "b0000000000"


def name_key(name: str) -> str:
    """Hex SHA-256 of the motion name: its position in the batching order."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def plan_batches(names: list[str], batch_size: int) -> dict[str, list[str]]:
    """Map batch id -> member names (ordered by key), sorted by batch id; a pure function of the input."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise ValueError(f"duplicate motion names: {', '.join(dupes[:10])}")
    keyed = sorted((name_key(n), n) for n in names)
    cuts = [i for i, (key, _) in enumerate(keyed) if int(key[16:32], 16) % batch_size == 0]

    runs: list[tuple[str, list[tuple[str, str]]]] = []
    if not cuts:
        if keyed:
            runs.append((_NO_CUT_ID, keyed))
    else:
        # Circular: the run ending at the first cut point starts after the last cut point.
        starts = [cuts[-1] + 1 - len(keyed)] + [c + 1 for c in cuts[:-1]]
        for start, end in zip(starts, cuts):
            members = [keyed[i] for i in range(start, end + 1)]  # negative indices wrap around
            runs.append(("b" + keyed[end][0][:10], members))

    batches: dict[str, list[str]] = {}
    for run_id, members in runs:
        for batch_id, piece in _split_long_run(run_id, members, batch_size):
            if batch_id in batches:
                raise ValueError(f"batch id collision on {batch_id}; use a different batch_size")
            batches[batch_id] = [name for _, name in sorted(piece)]
    return dict(sorted(batches.items()))


def _split_long_run(
    run_id: str, members: list[tuple[str, str]], batch_size: int
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Cut an unusually long run into near-equal consecutive pieces (depends on the run alone)."""
    if len(members) <= MAX_FACTOR * batch_size:
        return [(run_id, members)]
    count = math.ceil(len(members) / (2 * batch_size))
    size, extra = divmod(len(members), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append((f"{run_id}-{i:02d}", members[start:end]))
        start = end
    return pieces
