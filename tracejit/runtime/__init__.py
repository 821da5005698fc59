"""tracejit.runtime (being built)."""
