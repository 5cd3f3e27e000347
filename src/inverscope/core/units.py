"""Physical constants and electron-optics conversions.

Units: energies in eV, lengths in Å, angles in mrad, potentials in V, projected
potentials in V·Å. Constants are CODATA 2018 values as given by
:mod:`scipy.constants`.
"""

from __future__ import annotations

import math

from scipy import constants as _c

#: Bohr radius [Å]
BOHR_ANGSTROM = _c.physical_constants["Bohr radius"][0] * 1e10
#: e / (4 pi eps0) [V·Å]
COULOMB_V_ANGSTROM = _c.e / (4 * math.pi * _c.epsilon_0) * 1e10
#: Factor turning an electron scattering factor f_e(k) [Å] into the 2D Fourier
#: transform of the infinitely projected potential [V·Å^3]: 2 pi a0 e/(4 pi eps0).
SCATTERING_FACTOR_TO_POTENTIAL = 2 * math.pi * BOHR_ANGSTROM * COULOMB_V_ANGSTROM


def relativistic_gamma(energy_ev: float) -> float:
    """Lorentz factor of an electron of kinetic energy `energy_ev` [eV]."""
    return 1.0 + _c.e * energy_ev / (_c.m_e * _c.c**2)


def wavelength_angstrom(energy_ev: float) -> float:
    """Relativistic de Broglie wavelength [Å] of an electron of energy [eV]."""
    e_joule = energy_ev * _c.e
    p = math.sqrt(e_joule * (2 * _c.m_e * _c.c**2 + e_joule)) / _c.c
    return _c.h / p * 1e10


def interaction_parameter(energy_ev: float) -> float:
    """Interaction parameter sigma [1/(V·Å)]: phase shift per projected potential.

    sigma = 2 pi gamma m_e e lambda / h^2 (Kirkland 2010, eq. 5.6).
    """
    lam_m = wavelength_angstrom(energy_ev) * 1e-10
    sigma_per_v_m = 2 * math.pi * relativistic_gamma(energy_ev) * _c.m_e * _c.e * lam_m / _c.h**2
    return sigma_per_v_m * 1e-10
