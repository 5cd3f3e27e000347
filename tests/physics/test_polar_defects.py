"""Defective (K,Na)NbO3 supercells and their truth masks on the probe grid."""

import warnings

import numpy as np
import pytest
import spglib
from ase import Atoms

from inverscope.core.errors import InverscopeError
from inverscope.physics.structures.polar import parse_variant, projection_classes
from inverscope.physics.structures.polar_defects import (
    amorphous_layer,
    inclined_wall,
    polar_domains,
    remove_column,
    rhombohedral_region,
    thickness_step,
    truth_masks,
    truth_masks_from_info,
    wall_180,
    wall_90,
)

NZ = 2


def _disp(atoms):
    d = atoms.positions - atoms.arrays["site_position"]
    lengths = np.diag(atoms.cell[:])
    return d - np.round(d / lengths) * lengths


def _nb(atoms):
    return np.array(atoms.get_chemical_symbols()) == "Nb"


@pytest.fixture(scope="module")
def wall180():
    return polar_domains(wall_180(8, 4, "[110]", position=4, axis="x"), NZ)


def test_wall_180_opposite_domains_and_mask(wall180):
    atoms = wall180
    assert len(atoms) == 5 * 8 * 4 * NZ
    nb = _nb(atoms)
    ix = atoms.arrays["pc_cell"][:, 0]
    d = _disp(atoms)
    left, right = d[nb & (ix < 4)].mean(axis=0), d[nb & (ix >= 4)].mean(axis=0)
    assert np.linalg.norm(left) > 0.1
    assert np.allclose(left, -right, atol=1e-9)
    assert left @ np.array([1, 1, 0]) > 0
    masks = truth_masks_from_info(atoms, 4)
    wall = masks.masks["wall"]
    assert wall.shape == (4 * 4, 8 * 4)
    cols = np.flatnonzero(wall.any(axis=0))
    assert len(cols) == 4 and wall[:, cols].all()
    assert np.allclose((cols + 0.5) / 4, [3.625, 3.875, 4.125, 4.375])
    assert masks.masks["seam_wall"].any(axis=0).sum() == 4  # periodic image of the wall at x = 0
    pc = projection_classes((0, 0, 1))
    assert set(np.unique(masks.classes)) == {pc.class_of("[110]"), pc.class_of("[-1-10]")}


def test_wall_90_projected_classes_90_degrees_apart():
    dm = wall_90(6, 4, "[110]", position=3, axis="x")
    v1, v2 = dm.variants[0, 0], dm.variants[-1, 0]
    assert (v1, v2) == ("[110]", "[1-10]")
    assert dm.walls[0]["charged"] is False
    atoms = polar_domains(dm, NZ)
    masks = truth_masks_from_info(atoms, 2)
    pc = projection_classes((0, 0, 1))
    c1, c2 = masks.classes[0, 0], masks.classes[0, -1]
    diff = abs(pc.angles_deg[c1] - pc.angles_deg[c2]) % 360
    assert np.isclose(min(diff, 360 - diff), 90.0)
    with pytest.raises(InverscopeError):
        wall_90(6, 4, "[110]", 3, "x", partner="[-1-10]")


def test_inclined_wall_mask_angle():
    angle = 30.0
    dm = inclined_wall(24, 24, "[110]", "[-1-10]", angle_deg=angle, offset=0.5)
    masks = truth_masks([{"type": "domains", "variant_map": dm.variants.tolist(),
                          "walls": [dict(w) for w in dm.walls]}], 24, 24, 4)
    i, j = np.nonzero(masks.masks["wall"])
    pts = np.column_stack([(j + 0.5) / 4, (i + 0.5) / 4])
    pts -= pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    fitted = np.degrees(np.arctan2(vt[0, 1], vt[0, 0])) % 180
    assert abs(fitted - angle) < 2.0
    # the staircase of the variant map itself lies along the wall too
    atoms = polar_domains(dm, 1)
    inferred = truth_masks([{**atoms.info["defects"][0], "walls": None}], 24, 24, 4).masks["wall"]
    assert (inferred & masks.masks["wall"]).sum() > 0.5 * inferred.sum()


def test_vacancy_columns(wall180):
    atoms = wall180
    a = remove_column(atoms, "A", (2, 1))
    assert len(atoms) - len(a) == NZ
    gone = (atoms.arrays["pc_cell"][:, 0] == 2) & (atoms.arrays["pc_cell"][:, 1] == 1) & \
        (atoms.arrays["pc_site"] == 0)
    assert gone.sum() == NZ
    assert not ((a.arrays["pc_cell"][:, 0] == 2) & (a.arrays["pc_cell"][:, 1] == 1) & (a.arrays["pc_site"] == 0)).any()
    assert a.get_chemical_symbols().count("K") == atoms.get_chemical_symbols().count("K") - NZ
    o = remove_column(a, "O", (5, 3), site="O_y")
    assert len(a) - len(o) == NZ
    assert o.get_chemical_symbols().count("O") == a.get_chemical_symbols().count("O") - NZ
    assert len(atoms) == 5 * 8 * 4 * NZ  # input untouched
    m = truth_masks_from_info(o, 4).masks
    assert m["a_vacancy"].sum() == 12 and m["o_vacancy"].sum() == 12
    yy, xx = np.nonzero(m["o_vacancy"])
    assert np.allclose([((xx + 0.5) / 4).mean(), ((yy + 0.5) / 4).mean()], [5.5, 3.0])


def test_rhombohedral_region_along_111(wall180):
    out = rhombohedral_region(wall180, (1, 3, 1, 3), "[111]")
    pc = out.arrays["pc_cell"]
    inside = (pc[:, 0] >= 1) & (pc[:, 0] < 3) & (pc[:, 1] >= 1) & (pc[:, 1] < 3)
    d = _disp(out)[inside]
    norm = np.linalg.norm(d, axis=1)
    moved = norm > 1e-6
    assert moved.sum() > 0.9 * inside.sum()
    cos = np.abs(d[moved] @ (np.ones(3) / np.sqrt(3))) / norm[moved]
    assert cos.min() > 0.99
    nb = _nb(out)[inside]
    assert np.allclose(np.linalg.norm(d[nb], axis=1), np.linalg.norm(_disp(wall180)[inside][nb], axis=1))
    assert np.array_equal(out.positions[~inside], wall180.positions[~inside])
    masks = truth_masks_from_info(out, 2)
    assert masks.masks["rhombohedral"].sum() == 4 * 4 and (masks.classes[masks.masks["rhombohedral"]] == -1).all()


@pytest.mark.parametrize("mode", ["displace", "jammed"])
def test_amorphous_layer(wall180, mode):
    out = amorphous_layer(wall180, 2.5, seed=3, mode=mode)
    again = amorphous_layer(wall180, 2.5, seed=3, mode=mode)
    other = amorphous_layer(wall180, 2.5, seed=4, mode=mode)
    assert np.array_equal(out.positions, again.positions)
    assert not np.allclose(out.positions, other.positions)
    top = out.arrays["site_position"][:, 2] > out.cell[2, 2] + 0.25 * out.cell[2, 2] / NZ - 2.5
    assert 0 < top.sum() < len(out) and top.sum() == out.info["defects"][-1]["n_atoms"]
    assert np.array_equal(out.positions[~top], wall180.positions[~top])
    delta = np.linalg.norm(out.positions[top] - wall180.positions[top], axis=1)
    assert (delta > 1e-3).all()
    assert truth_masks_from_info(out, 2).masks["amorphous"].all()
    if mode == "jammed":
        from ase.neighborlist import neighbor_list

        assert len(neighbor_list("d", out, 1.5)) == 0  # no overlaps (min distance 1.7 Å by default)


def test_thickness_step(wall180):
    out = thickness_step(wall180, (0, 3, 1, 4), remove_cells=1)
    assert len(wall180) - len(out) == 3 * 3 * 1 * 5
    pc = out.arrays["pc_cell"]
    region = (pc[:, 0] < 3) & (pc[:, 1] >= 1)
    assert pc[region, 2].max() == NZ - 2 and pc[~region, 2].max() == NZ - 1
    m = truth_masks_from_info(out, 4).masks["thickness_step"]
    assert m.sum() == 3 * 3 * 16
    assert m[4:, :12].all() and not m[:4].any() and not m[:, 12:].any()


def test_masks_from_info_equal_masks_from_spec():
    dm = wall_180(6, 6, "[101]", position=3, axis="y")
    atoms = polar_domains(dm, 3, na_fraction=0.3, seed=1)
    atoms = remove_column(atoms, "Na" if "Na" in atoms.get_chemical_symbols() else "A", (1, 4))
    atoms = remove_column(atoms, "O", (4, 1), site="O_x")
    atoms = rhombohedral_region(atoms, (0, 2, 0, 2), "[-111]")
    atoms = amorphous_layer(atoms, 1.5, seed=2, region_xy=(3, 6, 3, 6))
    atoms = thickness_step(atoms, (4, 6, 0, 6), 2)
    spec = [
        {"type": "domains", "variant_map": dm.variants.tolist(), "walls": [dict(w) for w in dm.walls]},
        {"type": "vacancy_column", "site": "A", "cell_xy": [1, 4]},
        {"type": "vacancy_column", "site": "O_x", "cell_xy": [4, 1]},
        {"type": "rhombohedral", "region": [0, 2, 0, 2], "direction": [-1, 1, 1]},
        {"type": "amorphous", "region": [3, 6, 3, 6], "thickness_angstrom": 1.5},
        {"type": "thickness_step", "region": [4, 6, 0, 6], "remove_cells": 2},
    ]
    for ppc in (1, 3, 4):
        from_info = truth_masks_from_info(atoms, ppc)
        assert from_info.equals(truth_masks(spec, 6, 6, ppc))
        assert from_info.masks["defect"].any() and not from_info.masks["defect"].all()


def test_single_domain_cut_is_amm2():
    atoms = polar_domains(wall_90(8, 4, "[110]", position=4, axis="x"), 2)
    keep = atoms.arrays["pc_cell"][:, 0] >= 4  # the [1-10] domain, 4 x 4 x 2 pc cells
    cut = Atoms(np.array(atoms.get_chemical_symbols())[keep].tolist(), positions=atoms.positions[keep],
                cell=np.diag(np.diag(atoms.cell[:]) * [0.5, 1, 1]), pbc=True)
    cut.wrap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = spglib.get_symmetry_dataset((cut.cell[:], cut.get_scaled_positions(), cut.numbers), symprec=1e-3)
    assert int(data.number) == 38


def test_plain_map_and_cubic_columns():
    vmap = np.full((4, 4), "[110]", dtype=object)
    vmap[1:3, 1:3] = None
    atoms = polar_domains(vmap, 1)
    nb = _nb(atoms)
    pc = atoms.arrays["pc_cell"]
    cubic = (pc[:, 0] >= 1) & (pc[:, 0] < 3) & (pc[:, 1] >= 1) & (pc[:, 1] < 3)
    assert np.allclose(_disp(atoms)[cubic], 0.0)
    assert np.allclose(_disp(atoms)[nb & ~cubic] @ parse_variant("[110]")[1], 0.17 * np.sqrt(2), atol=0.01)
    m = truth_masks_from_info(atoms, 2)
    assert m.masks["paraelectric"].sum() == 16 and (m.classes[m.masks["paraelectric"]] == -1).all()
    assert m.masks["wall"].any() and not m.masks["seam_wall"].any()


@pytest.mark.parametrize("call", [
    lambda a: polar_domains([["[110]", "[112]"], ["[110]", "[110]"]], 1),
    lambda a: polar_domains([["[110]"]], 0),
    lambda a: remove_column(a, "A", (8, 0)),
    lambda a: remove_column(a, "O", (0, -1)),
    lambda a: remove_column(a, "O", (0, 0), site="O_q"),
    lambda a: amorphous_layer(a, -1.0),
    lambda a: amorphous_layer(a, 1.0, mode="melt"),
    lambda a: thickness_step(a, (0, 2, 0, 2), NZ),
    lambda a: thickness_step(a, (0, 9, 0, 2), 1),
    lambda a: rhombohedral_region(a, (0, 2, 0, 2), "[110]"),
    lambda a: wall_180(8, 4, "[110]", position=8),
    lambda a: inclined_wall(4, 4, offset=10.0),
    lambda a: truth_masks([{"type": "bogus"}], 4, 4, 2),
])
def test_bad_inputs_raise_one_line(wall180, call):
    with pytest.raises(InverscopeError) as err:
        call(wall180)
    assert "\n" not in str(err.value)
