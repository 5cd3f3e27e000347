"""Nearest-template matching of patterns against a simulated library (the baseline beside networks).

Each pattern is compared with every template by the normalized cross-correlation of their
square roots (variance-stabilised counts; the correlation ignores an overall intensity scale
and offset), over the eight operations of the 4mm point group (the registration fixes the
crystal axes, not which of the equivalent directions is which), a few small residual rotations,
and only over pixels the mask allows (saturated pixels are left out). The best template gives
the thickness and the tilt, folded into the octant 0 <= ty <= tx the library holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inverscope.core.errors import InverscopeError

#: the 4mm point group acting on an (n, n) pattern with the beam at the centre
OPS_4MM = (lambda p: p, lambda p: p[::-1, :], lambda p: p[:, ::-1], lambda p: p[::-1, ::-1],
           lambda p: p.T, lambda p: p.T[::-1, :], lambda p: p.T[:, ::-1], lambda p: p.T[::-1, ::-1])


@dataclass
class Match:
    """The best template of one pattern."""

    thickness_angstrom: float
    tilt_mrad: tuple[float, float]
    correlation: float
    template_index: tuple[int, int]
    operation: int
    rotation_deg: float


class TemplateMatcher:
    """Templates (tilts, thicknesses, n, n) with their tilts [mrad] and thicknesses [Å].

    Parameters
    ----------
    patterns : np.ndarray
        Library patterns on the grid the measured patterns are registered to.
    tilts_mrad : np.ndarray
        (tilts, 2) tilt of each template row.
    thicknesses_angstrom : np.ndarray
        (thicknesses,) thickness of each template column.
    rotations_deg : sequence of float
        Residual rotations tried on each pattern (registration errors).
    """

    def __init__(self, patterns: np.ndarray, tilts_mrad: np.ndarray, thicknesses_angstrom: np.ndarray,
                 rotations_deg=(-1.0, 0.0, 1.0)):
        p = np.asarray(patterns, dtype=np.float64)
        if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
            raise InverscopeError(f"templates: got shape {p.shape}; expected (tilts, thicknesses, n, n)")
        self.shape = p.shape
        self.tilts = np.asarray(tilts_mrad, dtype=float)
        self.thicknesses = np.asarray(thicknesses_angstrom, dtype=float)
        self.rotations = tuple(float(r) for r in rotations_deg)
        self._t = np.sqrt(np.clip(p, 0, None)).reshape(p.shape[0] * p.shape[1], -1)
        tc = self._t - self._t.mean(1, keepdims=True)
        self._tn = tc / (np.linalg.norm(tc, axis=1, keepdims=True) + 1e-30)  # for unmasked patterns

    def _scores(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked normalized cross-correlation of vector `x` with every template."""
        if mask.all():
            xc = x - x.mean()
            return self._tn @ xc / (np.linalg.norm(xc) + 1e-30)
        w = mask.astype(np.float64)
        n = w.sum()
        t = self._t * w
        tm = t.sum(1, keepdims=True) / n
        tc = (self._t - tm) * w
        xc = (x - (x * w).sum() / n) * w
        denom = np.sqrt((tc ** 2).sum(1) * (xc ** 2).sum()) + 1e-30
        return tc @ xc / denom

    def match(self, pattern: np.ndarray, mask: np.ndarray | None = None) -> Match:
        """The best template of `pattern` (n, n); `mask` marks pixels to use (True) or leave out."""
        pattern = np.asarray(pattern, dtype=np.float64)
        if pattern.shape != self.shape[-2:]:
            raise InverscopeError(f"pattern: got shape {pattern.shape}; the templates are {self.shape[-2:]}")
        mask = np.ones(pattern.shape, bool) if mask is None else np.asarray(mask, bool)
        if mask.sum() < 0.1 * mask.size:
            raise InverscopeError(f"pattern: only {int(mask.sum())} usable pixels of {mask.size}; too much is masked")
        best = (-np.inf, 0, 0, 0.0)
        root = np.sqrt(np.clip(pattern, 0, None))
        for rot in self.rotations:
            r = root if rot == 0 else ndimage.rotate(root, rot, reshape=False, order=1, mode="nearest")
            m = mask if rot == 0 else ndimage.rotate(mask.astype(float), rot, reshape=False, order=0) > 0.5
            for k, op in enumerate(OPS_4MM):
                s = self._scores(np.ascontiguousarray(op(r)).ravel(), np.ascontiguousarray(op(m)).ravel())
                i = int(np.argmax(s))
                if s[i] > best[0]:
                    best = (float(s[i]), i, k, rot)
        score, i, k, rot = best
        ti, zi = divmod(i, self.shape[1])
        return Match(float(self.thicknesses[zi]), (float(self.tilts[ti, 0]), float(self.tilts[ti, 1])), score,
                     (ti, zi), k, rot)


__all__ = ["TemplateMatcher", "Match", "OPS_4MM"]
