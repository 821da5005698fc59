"""tracejit.trace (being built)."""
