"""models layer (filled by the study issues)."""
