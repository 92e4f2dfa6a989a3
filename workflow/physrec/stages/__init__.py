"""One module per workflow step: index, split, record, select, merge."""
