"""Template matching: finds the template a pattern was made from, through symmetry, scale, noise and masks."""

import numpy as np
import pytest

from inverscope.analysis.template_matching import OPS_4MM, TemplateMatcher
from inverscope.core.errors import InverscopeError


def library(seed=0, tilts=3, thick=20, n=33):
    """Smooth random templates without 4mm symmetry of their own (so the operation is identifiable)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    base = np.exp(-(x ** 2 + y ** 2) * 4)
    out = np.empty((tilts, thick, n, n))
    for t in range(tilts):
        for z in range(thick):
            a, b = rng.uniform(-1, 1, 2)
            out[t, z] = base * (1.2 + np.sin(3 * x * (z + 1) / 5 + a) * np.cos(2 * y * (t + 1) + b) + 0.3 * x * y * z / thick)
    return np.clip(out, 0, None), np.array([[0, 0], [1, 0], [1, 1]], float)[:tilts], 10.0 * np.arange(1, thick + 1)


def test_every_template_is_found_through_the_4mm_operations_and_a_scale():
    p, tilts, thick = library()
    m = TemplateMatcher(p, tilts, thick, rotations_deg=(0.0,))
    rng = np.random.default_rng(1)
    for ti, zi, k in [(0, 3, 0), (2, 17, 5), (1, 9, 7), (2, 0, 2)]:
        pattern = 37.0 * OPS_4MM[k](p[ti, zi]) + 0.0
        got = m.match(pattern + rng.normal(0, 0.02, pattern.shape) * pattern.mean())
        assert got.template_index == (ti, zi) and got.thickness_angstrom == thick[zi]
        assert got.tilt_mrad == tuple(tilts[ti]) and got.correlation > 0.99


def test_masked_pixels_do_not_count():
    p, tilts, thick = library()
    m = TemplateMatcher(p, tilts, thick, rotations_deg=(0.0,))
    pattern = p[1, 12].copy()
    mask = np.ones(pattern.shape, bool)
    mask[10:20, 10:20] = False
    pattern[~mask] = 1e6  # saturated garbage where the mask says no
    masked, unmasked = m.match(pattern, mask), m.match(pattern)
    assert masked.template_index == (1, 12) and masked.correlation > 0.999
    assert unmasked.correlation < masked.correlation - 0.2  # the garbage spoils the fit when it is not left out


def test_bad_shapes_are_one_line():
    p, tilts, thick = library()
    with pytest.raises(InverscopeError, match="tilts, thicknesses, n, n"):
        TemplateMatcher(p[0], tilts, thick)
    m = TemplateMatcher(p, tilts, thick)
    with pytest.raises(InverscopeError, match="templates are"):
        m.match(np.ones((8, 8)))
    with pytest.raises(InverscopeError, match="usable pixels"):
        m.match(p[0, 0], np.zeros(p.shape[-2:], bool))
