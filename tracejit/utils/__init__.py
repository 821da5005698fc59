"""tracejit.utils (being built)."""
