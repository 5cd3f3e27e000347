"""Bundled example data sets (see each subfolder's README for attribution)."""
