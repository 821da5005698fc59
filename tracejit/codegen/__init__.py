"""tracejit.codegen (being built)."""
