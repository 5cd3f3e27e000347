"""ASE builders for the studies' structure families."""

from inverscope.physics.structures.perovskite import perovskite_cell, perovskite_slab

__all__ = ["perovskite_cell", "perovskite_slab"]
