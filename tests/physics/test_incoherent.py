"""Incoherent HAADF image model: probe-shaped atoms, Z^n contrast, sampling, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from inverscope.core.errors import InverscopeError
from inverscope.physics.imaging.incoherent import probe_fwhm_angstrom, probe_intensity, render_incoherent
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.structures.atomic_2d import projected_columns

torch.set_num_threads(2)


def _col(x, y, w=1.0, n=1):
    return {"x": np.atleast_1d(x).astype(float), "y": np.atleast_1d(y).astype(float),
            "z_weight": np.atleast_1d(w).astype(float), "n_atoms": np.atleast_1d(n)}


def _area_fwhm(img, p):
    return 2 * math.sqrt(float((img >= 0.5 * img.max()).sum()) * p * p / math.pi)


def test_probe_fwhm_diffraction_limit():
    pr = Probe(200e3, 25.0)
    assert probe_fwhm_angstrom(pr) == pytest.approx(0.514 * pr.wavelength_angstrom / 0.025, rel=0.03)
    assert probe_fwhm_angstrom(pr, source_fwhm_angstrom=0.6) > probe_fwhm_angstrom(pr) + 0.1


@pytest.mark.parametrize("pos", [(3.2, 3.2), (3.2131, 3.1787)])
def test_single_atom_image_is_the_probe(pos):
    pr = Probe(200e3, 25.0)
    p = 0.04
    img, params = render_incoherent([_col(*pos)], (160, 160), p, pr)
    im = img[0].double()
    assert float(im.sum()) == pytest.approx(1.0, rel=1e-5)
    # centroid in a window around the atom (away from the periodic wrap)
    yy, xx = torch.meshgrid(torch.arange(160.0), torch.arange(160.0), indexing="ij")
    win = ((xx - pos[0] / p) ** 2 + (yy - pos[1] / p) ** 2) < 30 ** 2
    cx = float((im * xx * win).sum() / (im * win).sum())
    cy = float((im * yy * win).sum() / (im * win).sum())
    assert abs(cx - pos[0] / p) < 0.05 and abs(cy - pos[1] / p) < 0.05
    # width: that of the probe itself
    assert _area_fwhm(im, p) == pytest.approx(probe_fwhm_angstrom(pr), rel=0.05)
    # atom on a pixel: the image is the probe intensity rolled onto the atom
    if pos == (3.2, 3.2):
        k = probe_intensity(pr, (160, 160), p).double()
        assert torch.allclose(im, torch.roll(k, (80, 80), (0, 1)), atol=1e-7)
    assert params[0]["pixel_size_angstrom"] == p and params[0]["semiangle_mrad"] == 25.0


@pytest.mark.parametrize("n", [1.6, 2.0])
def test_two_columns_scale_as_z_power(n):
    atoms = Atoms(["Pt", "Si"], positions=[[2.0, 3.0, 0.0], [6.0, 3.0, 0.0]], cell=[8, 6, 4])
    cols = projected_columns(atoms, z_exponent=n)
    p = 0.05
    img, _ = render_incoherent([cols], (120, 160), p, Probe(200e3, 25.0))
    i_pt = float(img[0, 60, 40])
    i_si = float(img[0, 60, 120])
    assert i_pt / i_si == pytest.approx((78 / 14) ** n, rel=0.01)


def test_thickness_exponent_and_source_size():
    pr = Probe(200e3, 22.0)
    cols = [_col([2.0, 6.0], [3.0, 3.0], w=[4.0, 1.0], n=[4, 1])]
    img, _ = render_incoherent(cols, (120, 160), 0.05, pr, thickness_exponent=0.5)
    assert float(img[0, 60, 40] / img[0, 60, 120]) == pytest.approx(4.0 * 4 ** -0.5, rel=1e-3)
    sharp, _ = render_incoherent([_col(4.0, 3.0)], (120, 160), 0.05, pr)
    blur, _ = render_incoherent([_col(4.0, 3.0)], (120, 160), 0.05, pr, source_fwhm_angstrom=0.8)
    assert _area_fwhm(blur[0], 0.05) > _area_fwhm(sharp[0], 0.05) + 0.2
    assert float(blur[0].sum()) == pytest.approx(1.0, rel=1e-4)


def test_saturating_column_law_and_its_limits():
    pr = Probe(200e3, 22.0)
    cols = [_col([2.0, 6.0], [3.0, 3.0], w=[4.0, 1.0])]

    def ratio(**kw):
        img, params = render_incoherent(cols, (120, 160), 0.05, pr, **kw)
        return float(img[0, 60, 40] / img[0, 60, 120]), params[0]

    assert ratio(saturation_weight=3.0)[0] == pytest.approx((1 - math.exp(-4 / 3)) / (1 - math.exp(-1 / 3)), rel=1e-3)
    assert ratio(saturation_weight=1e6)[0] == pytest.approx(4.0, rel=1e-3)      # W >> u: linear
    assert ratio(saturation_weight=0.01)[0] == pytest.approx(1.0, rel=1e-3)     # W << u: both saturated
    assert ratio()[1]["saturation_weight"] == 0.0
    with pytest.raises(InverscopeError, match="saturation_weight"):
        ratio(saturation_weight=-1.0)


def test_batch_of_pixel_sizes_and_probes_and_oversample():
    pr = [Probe(200e3, 20.0), Probe(300e3, 30.0, defocus_angstrom=20.0)]
    cols = [_col([1.0, 3.3], [2.0, 2.2], w=[2.0, 3.0]), _col(2.4, 2.4)]
    img, params = render_incoherent(cols, (64, 64), [0.1, 0.08], pr, oversample=1)
    assert img.shape == (2, 64, 64)
    assert [round(float(s), 4) for s in img.sum(dim=(1, 2))] == [5.0, 1.0]
    assert params[1]["energy_ev"] == 300e3 and params[1]["defocus_angstrom"] == 20.0
    img2, _ = render_incoherent(cols, (64, 64), [0.1, 0.08], pr, oversample=2)
    # on-pixel atom (image 1): oversampled rendering gives the same samples
    assert torch.allclose(img2[1], img[1], atol=2e-3 * float(img[1].max()))
    assert float(img2[0].sum()) == pytest.approx(5.0, rel=0.02)


def test_abf_mode_dark_columns():
    img, params = render_incoherent([_col([2.0, 6.0], [3.0, 3.0], w=[2.0, 1.0])], (120, 160), 0.05, Probe(200e3, 25.0),
                                    mode="abf", abf_contrast=0.4)
    assert float(img[0, 5, 80]) == pytest.approx(1.0, abs=1e-3)
    assert float(img[0, 60, 40]) == pytest.approx(0.6, abs=1e-3)
    assert float(img[0].min()) >= 0.6 - 1e-3
    assert params[0]["abf_contrast"] == 0.4


def test_bad_input():
    with pytest.raises(InverscopeError, match="pixel_size_angstrom"):
        probe_intensity(Probe(200e3, 30.0), (32, 32), 0.5)
    with pytest.raises(InverscopeError, match="mode"):
        render_incoherent([_col(1, 1)], (32, 32), 0.1, Probe(200e3, 20.0), mode="bf")
    with pytest.raises(InverscopeError, match="pixel_size_angstrom"):
        render_incoherent([_col(1, 1), _col(1, 1)], (32, 32), [0.1], Probe(200e3, 20.0))
