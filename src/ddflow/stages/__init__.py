"""Stage runners: one per rule file, each a run(...) that the CLI calls in one line."""
