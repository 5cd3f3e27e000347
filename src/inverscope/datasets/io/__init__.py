"""Readers of experimental and simulated 4D-STEM data into lazy arrays."""

from inverscope.datasets.io.fourd import FourD, open_4dstem

__all__ = ["FourD", "open_4dstem"]
