"""analysis layer (filled by the study issues)."""
