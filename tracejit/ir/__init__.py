"""tracejit.ir (being built)."""
