"""Physics checks of the multislice engine: analytic limits, conservation, gradients, invariances."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from inverscope.core.grid import Grid, is_fft_friendly, next_fft_size
from inverscope.core.units import SCATTERING_FACTOR_TO_POTENTIAL, interaction_parameter, wavelength_angstrom
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import (PotentialBuilder, antialias_aperture, scattering_factor,
                                                      slice_atoms, spatial_frequencies)
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.propagate import fresnel_propagator, multislice
from inverscope.physics.multislice.scan import Scan, grid_scan
from inverscope.physics.multislice.simulate import MultisliceSimulation, cbed_patterns
from inverscope.physics.structures import perovskite_slab


def sto(repeat=2, thickness=20.0):
    return perovskite_slab("SrTiO3", repeat, thickness)


def test_wavelength_and_interaction_parameter_textbook_values():
    # Kirkland (2010) table 2.2: 200 kV -> 0.02508 Å, 300 kV -> 0.01969 Å
    assert wavelength_angstrom(200e3) == pytest.approx(0.025079, rel=1e-4)
    assert wavelength_angstrom(300e3) == pytest.approx(0.019687, rel=1e-4)
    # sigma(200 kV) = 0.00072884 / (V Å) (Kirkland 2010, eq. 5.6)
    assert interaction_parameter(200e3) == pytest.approx(7.2884e-4, rel=1e-3)


def test_fft_friendly_rounding():
    assert next_fft_size(235) == 240
    assert next_fft_size(240) == 240
    assert all(is_fft_friendly(next_fft_size(n)) and next_fft_size(n) % 2 == 0 for n in range(2, 400))
    grid = Grid.from_sampling((11.715, 11.715), 0.05)
    assert grid.gpts == (240, 240) and max(grid.sampling) <= 0.05


def test_vacuum_conserves_intensity_exactly():
    atoms = Atoms("H", positions=[[1, 1, 0.5]], cell=[8, 8, 20], pbc=True)
    grid = Grid((8.0, 8.0), (128, 128))
    pot = PotentialBuilder(atoms, grid, 2.0)
    probe = Probe(200e3, 20.0)
    waves = probe.build(grid, [[4.0, 4.0]], dtype=torch.float64)
    props = [fresnel_propagator(grid, 2.0, probe.wavelength_angstrom, dtype=torch.float64)] * pot.num_slices
    ones = torch.ones((pot.num_slices, 128, 128), dtype=torch.complex128)
    out = multislice(waves, ones, props, [pot.num_slices - 1], lambda f: (f.abs() ** 2).sum())[0]
    assert abs(out.item() - 1.0) < 1e-10


def test_intensity_conserved_when_scattering_stays_inside_the_band_limit():
    # Fine sampling (cutoff ~680 mrad): everything the crystal scatters is kept, so <= 1e-4 is lost.
    atoms = sto(2, 20.0)
    grid = Grid.from_sampling(tuple(np.diag(atoms.cell)[:2]), 0.0125)
    sim = MultisliceSimulation(PotentialBuilder(atoms, grid, 1.9525), Probe(200e3, 20.0),
                               Scan([[1.0, 1.3], [2.9, 0.6]]), PixelatedDetector(), dtype=torch.float64)
    total = sim.run().array.sum(axis=(-1, -2)).ravel()
    assert np.all(np.abs(total - 1.0) <= 1e-4)


def test_intensity_loss_is_the_band_limit_and_shrinks_with_sampling():
    atoms = sto(2, 20.0)
    losses = []
    for s in (0.05, 0.025, 0.0125):
        grid = Grid.from_sampling(tuple(np.diag(atoms.cell)[:2]), s)
        sim = MultisliceSimulation(PotentialBuilder(atoms, grid, 1.9525), Probe(200e3, 20.0), Scan([[0.0, 0.0]]),
                                   PixelatedDetector(), dtype=torch.float64)
        losses.append(1.0 - float(sim.run().array.sum()))
    assert all(x > 0 for x in losses) and losses[0] > losses[1] > losses[2]


@pytest.mark.parametrize("element,tol", [("H", 1e-3), ("C", 1e-2)])
def test_thin_specimen_matches_weak_phase_kinematic_limit(element, tol):
    # A plane wave through one thin slice with a single atom: first-order (kinematic) amplitude
    # i sigma V(k), with V(k) = 2 pi a0 e f_e(k) / area from the scattering factor alone.
    a = Atoms(element, positions=[[4.0, 4.0, 0.5]], cell=[8, 8, 1], pbc=True)
    grid = Grid((8.0, 8.0), (256, 256))
    pot = PotentialBuilder(a, grid, 1.0, structure_factor="exact")
    t = pot.transmission_functions(200e3, dtype=torch.float64)
    n = 256 * 256
    waves = torch.full((1, 256, 256), 1.0 / n, dtype=torch.complex128)
    prop = fresnel_propagator(grid, 1.0, wavelength_angstrom(200e3), dtype=torch.float64)
    inten = multislice(waves, t, [prop], [0], lambda f: f.abs() ** 2)[0][0].numpy()
    kx, ky = spatial_frequencies(grid)
    k2 = kx[:, None] ** 2 + ky[None] ** 2
    kin = (interaction_parameter(200e3) * SCATTERING_FACTOR_TO_POTENTIAL * scattering_factor(element, k2) / 64.0) ** 2
    inside = (antialias_aperture(grid) == 1.0) & (k2 > 0)
    assert abs(inten[inside].sum() / kin[inside].sum() - 1.0) < tol


def test_weak_phase_error_grows_with_atomic_number():
    errs = []
    for el in ("H", "C", "Si"):
        a = Atoms(el, positions=[[4.0, 4.0, 0.5]], cell=[8, 8, 1], pbc=True)
        grid = Grid((8.0, 8.0), (128, 128))
        v = PotentialBuilder(a, grid, 1.0).projected_potential(dtype=torch.float64)
        errs.append(float((interaction_parameter(200e3) * v).max()))
    assert errs[0] < errs[1] < errs[2]


def test_hybrid_and_exact_structure_factors_agree_on_pixel_centred_atoms():
    atoms = sto(1, 8.0)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    v1 = PotentialBuilder(atoms, grid, 1.9525, structure_factor="hybrid").projected_potential(dtype=torch.float64)
    v2 = PotentialBuilder(atoms, grid, 1.9525, structure_factor="exact").projected_potential(dtype=torch.float64)
    # atoms sit on grid points here, so the bilinear spread is exact up to the pixel correction
    assert float((v1 - v2).norm() / v2.norm()) < 0.05


def test_projected_potential_integral_matches_scattering_factor_at_zero():
    a = Atoms("Sr", positions=[[3.0, 3.0, 0.5]], cell=[6, 6, 1], pbc=True)
    grid = Grid((6.0, 6.0), (96, 96))
    v = PotentialBuilder(a, grid, 1.0).projected_potential(dtype=torch.float64).numpy()
    integral = v.sum() * grid.sampling[0] * grid.sampling[1]
    expected = SCATTERING_FACTOR_TO_POTENTIAL * scattering_factor("Sr", np.array(0.0))
    assert integral == pytest.approx(float(expected), rel=1e-6)


def test_slicing_puts_boundary_atoms_in_the_deeper_slice():
    a = Atoms("O2", positions=[[0, 0, 2.0], [0, 0, 1.999]], cell=[4, 4, 4], pbc=True)
    s = slice_atoms(a, 2.0)
    assert s.num_slices == 2 and list(s.slice_index) == [1, 0]


def test_thickness_series_in_one_pass_equals_separate_runs():
    atoms = sto(2, 6 * 3.905)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (96, 96))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    probe, scan = Probe(200e3, 20.0), Scan([[0.3, 0.4], [1.95, 1.95]])
    series = MultisliceSimulation(pot, probe, scan, thicknesses_angstrom=[3 * 3.905, 6 * 3.905]).run().array
    thin = perovskite_slab("SrTiO3", 2, 3 * 3.905)
    single = MultisliceSimulation(PotentialBuilder(thin, grid, 1.9525), probe, scan).run().array
    np.testing.assert_allclose(series[:, 0], single[:, 0], rtol=0, atol=1e-6)


def test_batch_size_does_not_change_the_result():
    atoms = sto(2, 8.0)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    scan = grid_scan((0, 0), (3.905, 3.905), (3, 3))
    a = MultisliceSimulation(pot, Probe(200e3, 20.0), scan, batch_size=1).run().array
    b = MultisliceSimulation(pot, Probe(200e3, 20.0), scan, batch_size=9).run().array
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    assert a.shape == (3, 3, 1, 42, 42)


def test_memory_budget_sets_the_batch_size():
    atoms = sto(2, 8.0)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    scan = grid_scan((0, 0), (3.905, 3.905), (4, 4))
    small = MultisliceSimulation(pot, Probe(200e3, 20.0), scan, memory_budget_mb=0.5)
    large = MultisliceSimulation(pot, Probe(200e3, 20.0), scan, memory_budget_mb=512)
    assert 1 <= small.batch_size < 10 and large.batch_size >= 16


def test_frozen_phonons_are_seeded_and_have_the_requested_rms():
    atoms = sto(3, 40.0)
    ph = FrozenPhonons({"Sr": 0.1, "Ti": 0.05, "O": 0.08}, 4, seed=7)
    p1, p2 = ph.positions(atoms), ph.positions(atoms)
    np.testing.assert_array_equal(p1[3], p2[3])
    assert not np.allclose(p1[0], p1[1])
    d = np.concatenate([p - atoms.positions for p in p1])
    sym = np.tile(atoms.get_chemical_symbols(), 4)
    for el, s in (("Sr", 0.1), ("Ti", 0.05), ("O", 0.08)):
        assert np.std(d[sym == el]) == pytest.approx(s, rel=0.1)


def test_detector_rebinning_conserves_intensity_and_sets_sampling():
    atoms = sto(2, 8.0)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (128, 128))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    probe = Probe(200e3, 20.0)
    native = MultisliceSimulation(pot, probe, Scan([[1.0, 1.0]])).run()
    binned = MultisliceSimulation(pot, probe, Scan([[1.0, 1.0]]), PixelatedDetector(sampling_mrad=2.0 * native.sampling_mrad[0])).run()
    assert binned.sampling_mrad == pytest.approx((2.0 * native.sampling_mrad[0],) * 2)
    assert binned.array.sum() == pytest.approx(native.array.sum(), rel=1e-3)
    cropped = MultisliceSimulation(pot, probe, Scan([[1.0, 1.0]]), PixelatedDetector(max_angle_mrad=40.0)).run()
    n = cropped.array.shape[-1]
    assert n == 2 * math.floor(40.0 / native.sampling_mrad[0]) + 1
    c = native.array.shape[-1] // 2
    np.testing.assert_array_equal(cropped.array[..., :, :], native.array[..., c - n // 2:c + n // 2 + 1, c - n // 2:c + n // 2 + 1])


@pytest.mark.parametrize("method", ["hybrid", "exact"])
def test_autograd_matches_finite_differences(method):
    atoms = sto(1, 8.0)
    atoms.positions += np.random.default_rng(0).uniform(0.1, 0.4, atoms.positions.shape) * 3.905 / 64
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    pot = PotentialBuilder(atoms, grid, 1.9525, structure_factor=method)
    probe = Probe(200e3, 20.0, defocus_angstrom=20.0)
    weights = torch.rand(1, 1, 42, 42, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(pos, c30, c12):
        inten = cbed_patterns(pot, probe, [[1.0, 1.3]], atom_positions=pos, aberrations={"C30": c30, "C12": c12})
        return (inten * weights).sum()

    pos = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
    c30 = torch.tensor(5e4, dtype=torch.float64, requires_grad=True)
    c12 = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    f(pos, c30, c12).backward()
    h = 1e-5
    for i, k in [(0, 0), (1, 1), (5, 0), (7, 1)]:
        plus, minus = pos.detach().clone(), pos.detach().clone()
        plus[i, k] += h
        minus[i, k] -= h
        fd = (f(plus, c30.detach(), c12.detach()) - f(minus, c30.detach(), c12.detach())).item() / (2 * h)
        assert pos.grad[i, k].item() == pytest.approx(fd, rel=1e-4, abs=1e-9)
    fd30 = (f(pos.detach(), c30.detach() + 1.0, c12.detach()) - f(pos.detach(), c30.detach() - 1.0, c12.detach())).item() / 2
    fd12 = (f(pos.detach(), c30.detach(), c12.detach() + 1e-3) - f(pos.detach(), c30.detach(), c12.detach() - 1e-3)).item() / 2e-3
    assert c30.grad.item() == pytest.approx(fd30, rel=1e-4)
    assert c12.grad.item() == pytest.approx(fd12, rel=1e-4)
    assert abs(pos.grad[0, 0].item()) > 1e-6  # the check is not vacuous


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    atoms = sto(2, 8.0)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    a = MultisliceSimulation(pot, Probe(200e3, 20.0), Scan([[1.0, 1.0]])).run().array
    b = MultisliceSimulation(pot, Probe(200e3, 20.0), Scan([[1.0, 1.0]]), device="cuda").run().array
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("tilt", [(10.0, 0.0), (-6.0, 8.0)])
def test_tilted_vacuum_propagation_shifts_the_probe_by_z_tan_tilt(tilt):
    """In vacuum a tilt only moves the wave: the intensity after depth z is the untilted one
    shifted by z tan(t). Measured as the phase of the intensity's first Fourier coefficients
    (exact for a circular shift of a periodic, band-limited image), and its total kept."""
    grid = Grid((40.0, 40.0), (256, 256))
    lam = wavelength_angstrom(200e3)
    n, dz = 50, 10.0
    ones = torch.ones((n, 256, 256), dtype=torch.complex128)

    def propagate(t):
        probe = Probe(200e3, 20.0).build(grid, [[20.0, 20.0]], dtype=torch.float64)
        props = [fresnel_propagator(grid, dz, lam, dtype=torch.float64, tilt_mrad=t)] * n
        (i,) = multislice(probe, ones, props, [n - 1], lambda f: torch.fft.ifft2(f).abs() ** 2)
        return torch.fft.fft2(i[0]).numpy()

    tilted, flat = propagate(tilt), propagate((0.0, 0.0))
    shift = [-np.angle(tilted[1, 0] / flat[1, 0]) * 40.0 / (2 * np.pi),
             -np.angle(tilted[0, 1] / flat[0, 1]) * 40.0 / (2 * np.pi)]
    assert shift == pytest.approx(n * dz * np.tan(np.asarray(tilt) * 1e-3), abs=1e-6)
    assert abs(tilted[1, 0]) == pytest.approx(abs(flat[1, 0]), rel=1e-9)  # moved, not reshaped
    assert tilted[0, 0].real == pytest.approx(flat[0, 0].real, rel=1e-12)  # nor absorbed


def test_opposite_tilts_give_mirrored_patterns():
    """SrTiO3 [001] is mirror symmetric about x = 0 and y = 0: with the probe on a Sr column,
    tilts (t, u) and (-t, u) give patterns mirrored in kx, and (t, u), (t, -u) mirrored in ky."""
    atoms = sto(2, 39.05)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (128, 128))
    pot = PotentialBuilder(atoms, grid, 1.9525)

    def pattern(tilt):
        sim = MultisliceSimulation(pot, Probe(200e3, 15.0), Scan(np.zeros((1, 2))), PixelatedDetector(max_angle_mrad=50),
                                   tilt_mrad=tilt, dtype=torch.float64)
        return sim.run().array[0, 0]

    a, b, c = pattern((6.0, 2.0)), pattern((-6.0, 2.0)), pattern((6.0, -2.0))
    assert a.shape[0] % 2 == 1  # odd: flipping maps k to -k about the central pixel
    assert np.abs(a - b[::-1, :]).max() <= 1e-9 * a.max()
    assert np.abs(a - c[:, ::-1]).max() <= 1e-9 * a.max()
    assert np.abs(a - b).max() > 1e-3 * a.max()  # and the tilt matters


def test_tilt_out_of_range_is_one_line():
    from inverscope.core.errors import InverscopeError

    atoms = sto(1, 3.905)
    pot = PotentialBuilder(atoms, Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64)), 1.9525)
    for bad in [(float("nan"), 0.0), (0.0, 500.0), (1.0,), "x"]:
        with pytest.raises(InverscopeError, match="tilt_mrad"):
            MultisliceSimulation(pot, Probe(200e3, 15.0), Scan(np.zeros((1, 2))), tilt_mrad=bad)
