"""Polar (K,Na)NbO3 <110> variants: space groups, CIF reproduction, projection classes, A-site disorder."""

import re
import warnings

import numpy as np
import pytest
import spglib

from inverscope.core.errors import InverscopeError
from inverscope.physics.structures.polar import (
    VARIANTS,
    PolarAmplitudes,
    amplitudes_from_structure,
    knbo3_amplitudes,
    polar_perovskite,
    projection_classes,
    read_knbo3_cif,
)

SYMPREC = 1e-3  # Å; the smallest default displacement (O2 transverse) is 0.02 Å


def _sg(atoms) -> int:
    with warnings.catch_warnings():  # spglib 2.5+ warns about its old error handling
        warnings.simplefilter("ignore", DeprecationWarning)
        data = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
                                           symprec=SYMPREC)
    return int(data.number)


def _pair_distances(atoms, a: str, b: str, cutoff: float) -> np.ndarray:
    """Sorted a-b distances [Å] up to `cutoff`, periodic, from every `a` atom."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    sym = np.array(atoms.get_chemical_symbols())
    keep = (sym[i] == a) & (sym[j] == b)
    return np.sort(d[keep])


def test_cif_is_amm2():
    assert _sg(read_knbo3_cif()) == 38


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_amm2(variant):
    for n, m in ((1, 1), (2, 2)):
        for strain in ("full", "orthogonal"):
            atoms = polar_perovskite(variant, n, m, strain=strain)
            assert len(atoms) == 5 * n * n * m
            assert _sg(atoms) == 38, (variant, n, m, strain)
    assert atoms.info["polar_variant"] == variant
    p = np.array(atoms.info["polarization_unit"])
    assert np.isclose(np.linalg.norm(p), 1.0)
    assert np.allclose(p * np.sqrt(2), [int(c) for c in re.findall(r"-?\d", variant)])


def test_zero_amplitudes_give_cubic_parent():
    amps = knbo3_amplitudes().scaled(0.0)
    for variant in ("[110]", "[0-11]"):
        assert _sg(polar_perovskite(variant, amplitudes=amps)) == 221
        assert _sg(polar_perovskite(variant, 2, 3, amplitudes=amps)) == 221


def test_default_110_reproduces_the_cif():
    cif = read_knbo3_cif()
    built = polar_perovskite("[110]")
    assert len(cif) == 2 * len(built)  # conventional Amm2 cell = 2 pc cells
    for a, b, cut in (("Nb", "O", 2.6), ("K", "O", 3.4), ("K", "Nb", 3.8), ("O", "O", 3.2)):
        d_cif = _pair_distances(cif, a, b, cut)
        d_new = _pair_distances(built, a, b, cut)
        assert len(d_cif) == 2 * len(d_new), (a, b)
        # every distance of the pc cell appears twice in the CIF's cell
        assert np.allclose(d_cif[::2], d_new, rtol=0, atol=1e-3), (a, b)
        assert np.allclose(d_cif[1::2], d_new, rtol=0, atol=1e-3), (a, b)
    nb_o = _pair_distances(built, "Nb", "O", 2.6)
    assert len(nb_o) == 6 and np.ptp(nb_o) > 0.2  # off-centred Nb: short, medium, long bonds
    # volume per formula unit and the strain-free decomposition round-trip
    assert np.isclose(built.get_volume(), cif.get_volume() / 2, rtol=1e-9)
    amps = amplitudes_from_structure(cif)
    assert amps == knbo3_amplitudes()
    assert amps.b_shift_angstrom > 0.1 and amps.a_shift_angstrom > 0


def test_projection_classes_001_and_111():
    c001 = projection_classes((0, 0, 1))
    assert c001.n_classes == 8
    assert np.allclose(c001.angles_deg, np.arange(0, 360, 45))
    assert c001.members[c001.class_of("[101]")] == ("[101]", "[10-1]")
    assert c001.labels[c001.class_of("[10-1]")] == "[100]"
    assert c001.angles_deg[c001.class_of("[110]")] == 45.0
    assert sorted(v for m in c001.members for v in m) == sorted(VARIANTS)
    c111 = projection_classes([1, 1, 1])
    assert c111.n_classes == 12 and all(len(m) == 1 for m in c111.members)
    assert np.allclose(c111.angles_deg, np.arange(0, 360, 30))
    c110 = projection_classes((1, 1, 0))
    assert c110.members[-1] == ("[110]", "[-1-10]") and np.isnan(c110.angles_deg[-1])


def test_na_disorder_is_seeded_and_honours_fraction():
    kw = dict(n=4, m=3, na_fraction=0.5)
    a1, a2 = polar_perovskite("[1-10]", seed=7, **kw), polar_perovskite("[1-10]", seed=7, **kw)
    a3 = polar_perovskite("[1-10]", seed=8, **kw)
    assert a1.get_chemical_symbols() == a2.get_chemical_symbols()
    assert a1.get_chemical_symbols() != a3.get_chemical_symbols()
    sym = np.array(a1.get_chemical_symbols())
    assert np.sum(sym == "Na") == 24 and np.sum(sym == "K") == 24
    assert a1.info["na_fraction"] == 0.5 and a1.info["seed"] == 7
    assert np.allclose(a1.positions, a3.positions)  # only the species differ
    odd = polar_perovskite("[1-10]", n=3, m=1, na_fraction=0.3, seed=1)
    assert np.sum(np.array(odd.get_chemical_symbols()) == "Na") == 3  # round(0.3 * 9)
    virt = polar_perovskite("[1-10]", n=2, na_fraction=0.4, a_site="virtual")
    assert set(virt.get_chemical_symbols()) == {"K", "Nb", "O"}
    assert virt.info["a_site_mix"] == {"K": 0.6, "Na": 0.4} and virt.info["a_site_model"] == "virtual"


@pytest.mark.parametrize("call", [
    lambda: polar_perovskite("[111]"),
    lambda: polar_perovskite((1, 0, 0)),
    lambda: polar_perovskite("[110]", amplitudes=knbo3_amplitudes().replace(b_shift_angstrom=-0.1)),
    lambda: polar_perovskite("[110]", amplitudes=PolarAmplitudes(4.0, a_shift_angstrom=-0.01)),
    lambda: polar_perovskite("[110]", amplitudes=PolarAmplitudes(-4.0)),
    lambda: polar_perovskite("[110]", n=0),
    lambda: polar_perovskite("[110]", m=0),
    lambda: polar_perovskite("[110]", na_fraction=1.5),
    lambda: polar_perovskite("[110]", strain="sheared"),
    lambda: projection_classes((0, 0, 0)),
])
def test_bad_inputs_raise_one_line(call):
    with pytest.raises(InverscopeError) as err:
        call()
    assert "\n" not in str(err.value) and str(err.value)


def test_orthogonal_strain_is_simulable_and_full_is_not():
    from inverscope.physics.multislice.potentials import validate_atoms

    for variant in ("[110]", "[10-1]", "[0-11]"):
        atoms = polar_perovskite(variant, 2, 3, strain="orthogonal", na_fraction=0.5, seed=0)
        validate_atoms(atoms)  # orthogonal cell, known elements
        assert atoms.info["strain_model"] == "orthogonal"
    with pytest.raises(InverscopeError):
        validate_atoms(polar_perovskite("[110]"))  # the exact Amm2 cell is sheared in the pc frame


def test_amplitudes_from_a_user_cif_and_refusals(tmp_path):
    from importlib import resources

    import ase.build
    import ase.io

    from inverscope.core.errors import StructureError
    from inverscope.physics.structures.polar import _cif_path, amplitudes_from_cif, knbo3_amplitudes

    with resources.as_file(_cif_path()) as p:
        assert amplitudes_from_cif(p) == knbo3_amplitudes()
    ase.io.write(tmp_path / "cu.cif", ase.build.bulk("Cu", "fcc", a=3.6))
    with pytest.raises(StructureError, match=r"space group Fm-3m \(No. 225\); the polar builder needs Amm2"):
        amplitudes_from_cif(tmp_path / "cu.cif")
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 4\nloop_\n_atom_site_label\n garbage ( \n")
    with pytest.raises(StructureError, match="not a readable CIF"):
        amplitudes_from_cif(tmp_path / "bad.cif")
    with pytest.raises(StructureError, match="no such file"):
        amplitudes_from_cif(tmp_path / "none.cif")
