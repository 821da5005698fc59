"""tracejit.optim (being built)."""
