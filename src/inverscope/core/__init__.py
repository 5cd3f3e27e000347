"""Units, grids, typed errors, seeding, device choice and config loading."""
