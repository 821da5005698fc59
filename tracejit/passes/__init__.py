"""tracejit.passes (being built)."""
