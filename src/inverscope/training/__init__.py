"""training layer (filled by the study issues)."""
