"""physrec: record physics-based versions of kinematic reference motions (PARC stage 4)."""

__version__ = "0.1.0"
