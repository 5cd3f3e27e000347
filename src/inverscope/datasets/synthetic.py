"""Synthetic spectral scans with known ground truth, for testing unmixing and recognition.

:func:`eels_line_scan` draws a low-loss/shallow-core-loss EELS line scan across an oxide
heterostructure (layers such as STO | LSMO | BFO | LSMO | STO). Each material's spectrum is built
from physically shaped parts on a common energy axis:

* a bulk plasmon, the Drude loss function ``Im(-1/eps) = E G Ep^2 / ((E^2 - Ep^2)^2 + (E G)^2)``
  at a material-specific plasmon energy ``Ep`` and damping ``G``;
* a power-law tail of the zero-loss peak, ``A (E / E_min)^-r``;
* one or two core-loss-like edges with a delayed maximum: an instrument-broadened step at the
  onset ``E0``, a rise ``1 - exp(-(E - E0) / delay)`` and a power-law decay ``(E0 / E)^s``.

The onsets and plasmon energies in :data:`MATERIALS` are illustrative only (roughly where
Ti M2,3 ~ 35-47 eV, Mn M2,3 ~ 48 eV, Fe M2,3 ~ 54 eV, La N4,5 ~ 99 eV and Sr M4,5 ~ 133 eV
sit); they give three distinguishable but overlapping end members, not reference spectra.

Across the scan each layer's fraction is the difference of two normal CDFs (an erf-broadened
interface of width ``interface_width`` [positions]), so abundances are fractional near the
interfaces and sum to one everywhere. Counts are ``dose x spectrum`` with each end member
normalized to unit total, then Poisson noise and optional Gaussian read noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from inverscope.core.errors import InverscopeError
from inverscope.core.seeding import rng as make_rng


@dataclass(frozen=True)
class Edge:
    """A delayed-maximum core-loss edge: onset [eV], rise length [eV], height, decay exponent."""

    onset_ev: float
    delay_ev: float
    height: float
    decay_exponent: float = 2.5


@dataclass(frozen=True)
class MaterialSpectrum:
    """Shape parameters of one material's spectrum (heights relative to the plasmon peak = 1)."""

    plasmon_ev: float
    plasmon_width_ev: float
    background: float
    background_exponent: float
    edges: tuple[Edge, ...]


#: Illustrative spectra of three perovskite-oxide-like materials (not reference data).
MATERIALS: dict[str, MaterialSpectrum] = {
    "STO": MaterialSpectrum(29.0, 11.0, 1.5, 3.0, (Edge(36.0, 8.0, 0.35), Edge(133.0, 6.0, 0.12))),
    "LSMO": MaterialSpectrum(24.0, 9.0, 1.5, 2.8, (Edge(48.0, 6.0, 0.25), Edge(99.0, 4.0, 0.40))),
    "BFO": MaterialSpectrum(19.0, 8.0, 1.5, 3.2, (Edge(54.0, 7.0, 0.30),)),
}


@dataclass
class EELSLineScan:
    """A synthetic line scan and its ground truth.

    Attributes
    ----------
    cube : ndarray
        (rows, positions, channels) noisy counts [counts].
    clean : ndarray
        (rows, positions, channels) expected counts, ``abundances @ endmembers`` [counts].
    energy_ev : ndarray
        (channels,) energy loss of each channel [eV].
    endmembers : ndarray
        (k, channels) noise-free spectrum of a pure pixel of each material [counts]; each sums
        to ``dose_counts``.
    abundances : ndarray
        (rows, positions, k) true fractions, in [0, 1], summing to 1 per pixel.
    labels : ndarray
        (rows, positions) int64 index of the most abundant material.
    names : list of str
        The k materials, in order of first appearance in `layers`.
    layers : list of str
        The layer sequence along the scan.
    boundaries : ndarray
        (rows, len(layers) - 1) interface positions of each row [positions].
    dose_counts : float
        Expected counts of one spectrum over the energy window [counts].
    read_noise_counts : float
        Gaussian read noise added per channel [counts].
    """

    cube: np.ndarray
    clean: np.ndarray
    energy_ev: np.ndarray
    endmembers: np.ndarray
    abundances: np.ndarray
    labels: np.ndarray
    names: list[str]
    layers: list[str]
    boundaries: np.ndarray
    dose_counts: float
    read_noise_counts: float


def material_spectrum(material: MaterialSpectrum, energy_ev: np.ndarray, resolution_ev: float = 1.0) -> np.ndarray:
    """Noise-free spectrum of `material` on `energy_ev` [eV] (relative units, plasmon peak ~ 1).

    Parameters
    ----------
    material : MaterialSpectrum
    energy_ev : ndarray
        Energy-loss axis, all > 0 [eV].
    resolution_ev : float
        Gaussian broadening of the edge onsets [eV].
    """
    e = np.asarray(energy_ev, dtype=np.float64)
    ep, g = material.plasmon_ev, material.plasmon_width_ev
    plasmon = e * g * ep ** 2 / ((e ** 2 - ep ** 2) ** 2 + (e * g) ** 2) / (ep / g)
    spectrum = plasmon + material.background * (e / e[0]) ** -material.background_exponent
    for edge in material.edges:
        above = np.clip(e - edge.onset_ev, 0.0, None)
        step = ndtr((e - edge.onset_ev) / resolution_ev)
        rise = 1.0 - np.exp(-above / edge.delay_ev)
        tail = np.minimum(edge.onset_ev / e, 1.0) ** edge.decay_exponent
        spectrum = spectrum + edge.height * step * rise * tail
    return spectrum


def layer_fractions(x: np.ndarray, boundaries: np.ndarray, width: float) -> np.ndarray:
    """Fraction of each of ``len(boundaries) + 1`` layers at positions `x` [positions].

    Layer j spans ``[b_j, b_{j+1})`` with ``b_0 = -inf`` and ``b_L = +inf``; its fraction is
    ``Phi((x - b_j) / w) - Phi((x - b_{j+1}) / w)`` (Phi the normal CDF; a sharp step for w = 0).
    The fractions telescope to exactly one. Returns (len(x), L).
    """
    b = np.concatenate([[-np.inf], np.sort(boundaries), [np.inf]])
    d = x[:, None] - b[None, :]
    cdf = ndtr(d / width) if width > 0 else (d >= 0).astype(np.float64)
    return cdf[:, :-1] - cdf[:, 1:]


def _check(rows, positions, channels, energy_min_ev, energy_max_ev, layers, dose_counts, read_noise_counts,
           interface_width, interface_roughness) -> None:
    checks = [(rows >= 1, "rows", rows, "must be >= 1"), (positions >= 2, "positions", positions, "must be >= 2"),
              (channels >= 8, "channels", channels, "must be >= 8"),
              (0 < energy_min_ev < energy_max_ev, "energy_min_ev", energy_min_ev,
               f"must be > 0 and below energy_max_ev = {energy_max_ev}"),
              (np.isfinite(dose_counts) and dose_counts > 0, "dose_counts", dose_counts, "must be a number > 0"),
              (read_noise_counts >= 0, "read_noise_counts", read_noise_counts, "must be >= 0"),
              (interface_width >= 0, "interface_width", interface_width, "must be >= 0 [positions]"),
              (interface_roughness >= 0, "interface_roughness", interface_roughness, "must be >= 0 [positions]"),
              (len(layers) >= 1, "layers", list(layers), "need at least one layer")]
    for ok, name, value, allowed in checks:
        if not ok:
            raise InverscopeError(f"{name}: got {value!r}; {allowed}")
    for name in layers:
        if name not in MATERIALS:
            raise InverscopeError(f"layers: got {name!r}; allowed: {', '.join(MATERIALS)}")


def _widths(layer_widths, n_layers: int, positions: int) -> np.ndarray:
    if layer_widths is None:
        return np.full(n_layers, positions / n_layers)
    w = np.asarray(layer_widths, dtype=np.float64)
    if w.shape != (n_layers,) or not np.all(w > 0) or abs(w.sum() - positions) > 1e-9 * positions:
        raise InverscopeError(f"layer_widths: got {np.asarray(layer_widths).tolist()}; need {n_layers} positive "
                              f"widths (one per layer) summing to positions = {positions}")
    return w


def eels_line_scan(rows: int = 6, positions: int = 160, channels: int = 256, energy_min_ev: float = 5.0,
                   energy_max_ev: float = 150.0, layers: Sequence[str] = ("STO", "LSMO", "BFO", "LSMO", "STO"),
                   layer_widths: Sequence[float] | None = None, interface_width: float = 2.0,
                   interface_roughness: float = 0.0, dose_counts: float = 2e4, read_noise_counts: float = 0.0,
                   poisson: bool = True, seed: int | np.random.Generator = 0) -> EELSLineScan:
    """A seeded synthetic EELS line scan across a heterostructure with known end members.

    Parameters
    ----------
    rows, positions : int
        Scan shape: a few rows, each a line across the layers [pixels].
    channels : int
        Energy channels, evenly spaced from `energy_min_ev` to `energy_max_ev` [eV].
    layers : sequence of str
        Layer sequence along the scan, names from :data:`MATERIALS`; a material may repeat.
    layer_widths : sequence of float, optional
        Width of each layer [positions], summing to `positions` (default: equal widths).
    interface_width : float
        Standard deviation of the erf broadening of every interface [positions] (0: sharp).
    interface_roughness : float
        Standard deviation of a random per-row shift of every interface [positions].
    dose_counts : float
        Expected counts of one spectrum over the window [counts].
    read_noise_counts : float
        Gaussian read noise per channel [counts].
    poisson : bool
        Draw Poisson counts (False: the cube is the expected counts plus read noise).
    seed : int or numpy Generator

    Returns
    -------
    EELSLineScan

    Raises
    ------
    InverscopeError
        Any argument out of range, an unknown material, or layer widths that do not fit.
    """
    _check(rows, positions, channels, energy_min_ev, energy_max_ev, layers, dose_counts, read_noise_counts,
           interface_width, interface_roughness)
    g = make_rng(seed)
    energy = np.linspace(energy_min_ev, energy_max_ev, channels)
    names = list(dict.fromkeys(layers))
    shapes = np.stack([material_spectrum(MATERIALS[n], energy) for n in names])
    endmembers = dose_counts * shapes / shapes.sum(axis=1, keepdims=True)
    nominal = np.cumsum(_widths(layer_widths, len(layers), positions))[:-1]
    boundaries = nominal[None, :] + interface_roughness * g.standard_normal((rows, len(nominal)))
    x = np.arange(positions) + 0.5
    onehot = np.array([[float(layer == n) for n in names] for layer in layers])  # (L, k)
    abundances = np.stack([layer_fractions(x, b, interface_width) @ onehot for b in boundaries])
    clean = abundances @ endmembers
    cube = g.poisson(clean).astype(np.float64) if poisson else clean.copy()
    if read_noise_counts > 0:
        cube = cube + g.normal(0.0, read_noise_counts, size=cube.shape)
    return EELSLineScan(cube, clean, energy, endmembers, abundances, np.argmax(abundances, axis=-1).astype(np.int64),
                        names, list(layers), np.sort(boundaries, axis=1), float(dose_counts), float(read_noise_counts))
