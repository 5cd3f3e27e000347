"""inverscope: learn to read structure out of microscopy data.

A physics forward model generates labeled data, a network learns the inverse,
and the network is applied to experiments. See the README for a tour.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
