"""Observations that learned trackers read, by name; PARC's 1312-value layout is ``parc``.

A layout is a module with ``observation_size(character)`` and a class ``Observation``
built as ``Observation(character, motions, terrains, control_dt, device)`` whose
``compute(state, motion, time, targets=None, whole=None)`` returns [N, size] float32, and whose
``whole(root_rot)`` computes what ``compute`` must compute for a whole batch at once (its bits
depend on the batch's size) so that slices of the batch can be observed on several threads
(observer.Observer.prepare). New layouts register here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from physrec.motion.character import Character

OBSERVATIONS = {"parc": "physrec.observations.parc"}


def observation_module(name: str) -> ModuleType:
    if name not in OBSERVATIONS:
        raise ValueError(f"unknown observation {name!r}; available: {', '.join(sorted(OBSERVATIONS))}")
    return importlib.import_module(OBSERVATIONS[name])


def observation_size(name: str, character: Character) -> int:
    return observation_module(name).observation_size(character)
