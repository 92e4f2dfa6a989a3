"""The batch plan: which motions a pass starts (later starts only for what still fails), each
attempt's seed, and the environments they run in (one per motion on its cropped terrain,
against the batch's reference)."""

from __future__ import annotations

import numpy as np

from physrec.formats.hashing import stable_hash
from physrec.motion.character import Character
from physrec.motion.reference import ReferenceSet
from physrec.motion.terrain import reachable_boxes
from physrec.recording.data import BatchMotion
from physrec.recording.settings import RecordSettings
from physrec.sim.backend import BackendSpec, SimBackend, make_backend
from physrec.sim.world import pad_boxes


def start_plan(lengths: np.ndarray, fraction: float, pending: np.ndarray, min_remaining: float) -> np.ndarray:
    """Motions to attempt from `fraction`: still pending, and (for later starts) long enough."""
    if fraction == 0.0:
        return pending.copy()
    return pending & ((1.0 - fraction) * lengths >= min_remaining - 1e-9)


def pass_starts(settings: RecordSettings, p: int, lengths: np.ndarray, pending: np.ndarray,
                restart: np.ndarray) -> tuple[np.ndarray, float | np.ndarray]:
    """Pass p's motions and start fraction (one per motion for segment restarts). `pending`: the
    motions still failing (parc) or whose attempt of the pass before failed (segments); `restart`:
    where each motion's last attempt ended."""
    if settings.recovery == "parc":
        fraction = settings.pass_fractions[p]
        return np.flatnonzero(start_plan(lengths, fraction, pending, settings.min_remaining)), fraction
    if p == 0:
        return np.flatnonzero(pending), 0.0
    todo = np.flatnonzero(pending & (lengths - restart >= settings.min_segment - 1e-9))
    return todo, restart[todo] / lengths[todo]


def episode_seed(seed: int, name: str, fraction: float) -> int:
    """Per-attempt seed derived from the run seed, stable under batch changes."""
    return int(stable_hash([seed, name, round(fraction, 9)])[:8], 16)


def motion_boxes(m: BatchMotion, margin: float) -> np.ndarray:
    """Boxes of the part of a motion's terrain its character can reach, in the motion's frame."""
    return reachable_boxes(m.terrain, m.motion.root_pos[:, :2], margin)


def batch_boxes(motions: list[BatchMotion], margin: float) -> np.ndarray:
    """Every motion's cropped terrain, padded to one box count: [N, slots, 6]. Motions that
    share their motion and terrain objects (a benchmark's copies) share the work: about a
    millisecond per motion, a minute for 65536."""
    keys = [(id(m.motion), id(m.terrain)) for m in motions]
    made: dict[tuple[int, int], np.ndarray] = {}
    for key, m in zip(keys, motions):
        if key not in made:
            made[key] = motion_boxes(m, margin)
    return pad_boxes([made[key] for key in keys])


def open_backend(spec: BackendSpec, character: Character, motions: list[BatchMotion],
                 settings: RecordSettings) -> SimBackend:
    """A backend with one environment per motion, each on its own cropped terrain."""
    padded = batch_boxes(motions, settings.terrain_margin)
    sim = make_backend(spec, character, settings.physics, len(motions), padded.shape[1])
    sim.set_terrain(np.arange(len(motions)), padded)
    return sim


def build_reference(character: Character, motions: list[BatchMotion]) -> ReferenceSet:
    return ReferenceSet(character, [m.motion.root_pos for m in motions], [m.motion.root_rot for m in motions],
                        [m.motion.joint_rot for m in motions], [m.motion.fps for m in motions])
