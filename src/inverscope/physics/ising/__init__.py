"""Random-bond random-field Ising model and its hysteresis loops (zero-temperature Glauber dynamics)."""

from inverscope.physics.ising.hysteresis import PARAMETERS, IsingConfig, IsingLoops, simulate_loops
from inverscope.physics.ising.lattice import Lattice, lattice

__all__ = ["PARAMETERS", "IsingConfig", "IsingLoops", "simulate_loops", "Lattice", "lattice"]
