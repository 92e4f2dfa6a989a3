"""physrec: record physics-based versions of kinematic reference motions (PARC stage 4)."""

__version__ = "0.1.0"

# What a rerun decides by, instead of __version__: bump RECORDING_VERSION with any change that
# alters what `record` writes (physics, trajectories, tables, terrain file) and
# SELECTION_VERSION with any change to what `select` writes; every other upgrade re-records
# nothing. tests/test_output_versions.py holds the demo's recorded bytes per version and fails
# when they change without a bump.
RECORDING_VERSION = 6
SELECTION_VERSION = 3
