"""tracejit.nn (being built)."""
