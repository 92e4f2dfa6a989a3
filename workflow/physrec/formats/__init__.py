"""Files on disk: PARC motion files, dataset YAMLs, tables, trajectories, atomic writes."""
