"""PARC heightfield terrains: flat dx-by-dx cells at absolute heights, vertical walls between them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Heightfield:
    """One PARC terrain (MSTerrainData).

    Axis 0 of ``hf`` is world x, axis 1 is world y. Cell (i, j) is a flat square of side
    ``dx`` centred at ``min_point + (i, j) * dx`` at absolute height ``hf[i, j]``.
    """

    hf: np.ndarray  # [X, Y] float32, absolute world z
    min_point: np.ndarray  # [2] float32, world xy of the centre of cell (0, 0)
    dx: float
    hf_maxmin: np.ndarray | None = field(default=None)  # [X, Y, 2] float32 augmentation bounds

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.hf.shape[0]), int(self.hf.shape[1]))
