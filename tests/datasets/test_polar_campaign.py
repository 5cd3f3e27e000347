"""Polar 4D-STEM campaigns: one store item per (K,Na)NbO3 polarization variant, run like every store job."""

import numpy as np
import pytest
import yaml
import zarr

from inverscope.core.config import validate
from inverscope.core.errors import InverscopeError
from inverscope.datasets.jobstore import create_store
from inverscope.datasets.polar_campaign import (PolarCampaignConfig, PolarCampaignJob, read_item, run_polar_campaign,
                                                simulate_variant)
from inverscope.physics.structures.polar import VARIANTS, projection_classes
from tests.studies.cli_helpers import cli, one_line_error

# one pc cell, 3 x 3 positions (so x -> -x maps position 1/3 onto 2/3), exits at 5 and 10 cells (~2, ~4 nm),
# 16 x 16 px of 6.4 mrad (the native pixel of one 4.04 Å cell at 200 kV is 6.2 mrad)
TINY = {"kind": "polar_4d", "variants": ["[110]", "[-1-10]"], "repeat_xy": 1, "positions_per_cell": 3,
        "thicknesses_nm": [2, 4], "sampling_angstrom": 0.1, "pattern_pixels": 16, "detector_sampling_mrad": 6.4}


def quiet(cfg, path, **kw):
    return run_polar_campaign(cfg, path, log=None, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("polar") / "polar.zarr"
    stats = quiet(PolarCampaignConfig.model_validate(TINY), path)
    assert stats["simulated"] == 2 and stats["skipped"] == 0
    return path


def test_store_is_complete_with_normalized_patterns_and_right_labels(store):
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["complete"] is True and g["done"][:].all()
    p = g["patterns"][:]
    assert p.shape == (2, 2, 9, 16, 16) and p.dtype == np.float32
    assert np.isfinite(p).all() and p.min() >= 0
    sums = p.sum(axis=(-1, -2))  # fraction of the probe's unit intensity inside the +-51 mrad pattern
    assert sums.max() <= 1 + 1e-5 and sums.min() > 0.98
    assert g["variant_index"][:].tolist() == [VARIANTS.index("[110]"), VARIANTS.index("[-1-10]")]
    classes = projection_classes((0, 0, 1))
    assert [g.attrs["class_labels"][c] for c in g["class_index"][:]] == ["[110]", "[-1-10]"]
    assert [classes.angles_deg[c] for c in g["class_index"][:]] == [45.0, 225.0]
    s = np.sqrt(0.5)
    assert np.allclose(np.stack([g["p_x"][:], g["p_y"][:], g["p_z"][:]], 1), [[s, s, 0], [-s, -s, 0]])
    assert g.attrs["exit_cells"] == [5, 10] and g.attrs["sampling_mrad"] == [6.4, 6.4]
    item = read_item(store, 1)
    c = g["cell_x_angstrom"][1]
    assert item["variant"] == "[-1-10]" and item["class_label"] == "[-1-10]"
    assert np.allclose(item["exits_angstrom"], np.array([5, 10]) * g["cell_z_angstrom"][1], rtol=1e-6)
    assert np.allclose(item["exits_angstrom"], [19.857, 39.714], atol=1e-3)  # c = a_pc (1 + e_n), P in-plane
    assert item["positions_angstrom"].shape == (9, 2)
    assert np.allclose(item["positions_angstrom"][[1, 3, 4]], [[0, c / 3], [c / 3, 0], [c / 3, c / 3]], rtol=1e-6)
    assert np.array_equal(item["patterns"], simulate_variant(PolarCampaignConfig.model_validate(TINY), 1, "cpu"))


def test_opposite_variants_are_the_180_degree_rotation_of_each_other(store):
    """[-1-10] is [110] turned by 180 deg about the beam (about an A column at the origin), so
    pattern_B(k, r) == pattern_A(-k, -r) exactly, dynamical scattering included; -r wraps in the
    cell: position (i, j) of the 3 x 3 grid maps onto ((3 - i) % 3, (3 - j) % 3). Measured:
    2.6e-6 of the largest pixel (float32), so 2e-5 is asserted."""
    g = zarr.open_group(str(store), mode="r")
    a, b = g["patterns"][0], g["patterns"][1]
    flip = (-np.arange(3)) % 3
    partner = np.arange(9).reshape(3, 3)[flip][:, flip].ravel()

    def minus_k(x):  # k -> -k about the beam at pixel (8, 8); pixel 0 has no partner in a 16-px pattern
        return x[..., 1:, 1:][..., ::-1, ::-1]

    scale = a.max()
    assert np.abs(a[..., 1:, 1:] - minus_k(b[:, partner])).max() < 2e-5 * scale
    # at the origin (its own partner) the difference of the two variants is odd in k ...
    d = (a - b)[:, 0, 1:, 1:]
    assert np.abs(d + d[:, ::-1, ::-1]).max() < 2e-5 * scale
    # ... and large: a polar crystal breaks Friedel's law in CBED (measured 0.41 of the largest pixel)
    assert np.abs(d).max() > 0.05 * scale


def test_frozen_phonons_average_within_the_item():
    cfg = PolarCampaignConfig.model_validate({**TINY, "variants": ["[110]"], "thicknesses_nm": [2],
                                              "phonon_configs": 2})
    static = simulate_variant(PolarCampaignConfig.model_validate({**TINY, "variants": ["[110]"],
                                                                  "thicknesses_nm": [2]}), 0, "cpu")
    fp = simulate_variant(cfg, 0, "cpu")
    assert fp.shape == static.shape == (1, 9, 16, 16)
    assert np.array_equal(fp, simulate_variant(cfg, 0, "cpu"))   # seeded
    assert np.isfinite(fp).all() and fp.min() >= 0 and fp.sum(axis=(-1, -2)).max() <= 1 + 1e-5
    assert np.abs(fp - static).max() > 1e-4 * static.max()


def test_rerun_resumes_and_another_config_is_refused_or_replaced(store, tmp_path):
    import shutil

    cfg = PolarCampaignConfig.model_validate(TINY)
    path = tmp_path / "polar.zarr"
    shutil.copytree(store, path)
    stats = quiet(cfg, path)
    assert stats["simulated"] == 0 and stats["skipped"] == 2 and stats["repaired"] == []
    other = PolarCampaignConfig.model_validate({**TINY, "semiangle_mrad": 20})
    with pytest.raises(InverscopeError, match="store was written by another .*differs in semiangle_mrad"):
        quiet(other, path)
    empty = tmp_path / "empty.zarr"
    create_store(empty, PolarCampaignJob(other))  # a store of another config without a finished item
    assert quiet(cfg, empty)["simulated"] == 2
    assert zarr.open_group(str(empty), mode="r").attrs["config"]["semiangle_mrad"] == 24.0


@pytest.mark.parametrize("over,needle", [
    ({"semiangle_mrad": 0}, "semiangle_mrad: Input should be greater than 0"),
    ({"variants": ["[110]", "[111]"]}, "unknown variant '[111]'"),
    ({"pattern_pixels": 64}, "pattern_pixels: 64 px of 6.4 mrad reach 204.8 mrad, beyond"),
    ({"detector_sampling_mrad": 3.2}, "detector_sampling_mrad: got 3.2; finer than the simulated"),
    ({"thicknesses_nm": [4, 2]}, "thicknesses_nm"),
], ids=["semiangle-0", "unknown-variant", "pattern-too-large", "detector-too-fine", "thickness-order"])
def test_bad_configs_are_one_line_and_write_nothing(tmp_path, over, needle):
    path = tmp_path / "polar.zarr"
    with pytest.raises(InverscopeError) as err:
        quiet(validate(PolarCampaignConfig, {**TINY, **over}), path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_runs_the_kind_and_refuses_a_bad_variant_in_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**TINY, "variants": ["[110]", "[1-11]"]}))
    assert "unknown variant '[1-11]'" in one_line_error(cli("campaign", tmp_path / "p.yaml", "--out",
                                                            tmp_path / "p.zarr", "--quiet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_variants_of_one_projection_class_give_the_same_static_patterns():
    """P along the beam is invisible to the sliced multislice (the displacements keep every atom
    in its half-cell slice): [101] and [10-1] share class [100] down [001]pc and their patterns."""
    cfg = PolarCampaignConfig.model_validate({**TINY, "variants": ["[101]", "[10-1]"], "thicknesses_nm": [2]})
    assert np.array_equal(simulate_variant(cfg, 0, "cpu"), simulate_variant(cfg, 1, "cpu"))


def test_structure_scan_repeats_with_the_lattice_and_follows_truth_mask_positions():
    """simulate_structure puts probe (i, j) at ((j + 1/2) / ppc, (i + 1/2) / ppc) cells: on a single-variant
    KNbO3 domain, positions one pc cell apart see the same crystal, so their patterns agree."""
    from inverscope.datasets.polar_campaign import simulate_structure
    from inverscope.physics.structures.polar_defects import polar_domains

    cfg = PolarCampaignConfig.model_validate({**TINY, "repeat_xy": 2, "thicknesses_nm": [2],
                                              "detector_sampling_mrad": 3.2})
    atoms = polar_domains(np.full((2, 2), "[110]", dtype=object), cfg.exit_cells()[0])
    p = simulate_structure(cfg, atoms, 2)
    assert p.shape == (1, 4, 4, 16, 16)
    scale = p.max()
    np.testing.assert_allclose(p[0, :2], p[0, 2:], atol=1e-5 * scale)       # one cell along y
    np.testing.assert_allclose(p[0, :, :2], p[0, :, 2:], atol=1e-5 * scale)  # one cell along x
    assert np.abs(p[0, 0, 0] - p[0, 0, 1]).max() > 1e-2 * scale             # half a cell apart: another pattern
    with pytest.raises(InverscopeError, match="thick"):
        simulate_structure(cfg, polar_domains(np.full((2, 2), "[110]", dtype=object), 1), 2)


def test_defocus_and_tilt_reach_the_simulation():
    from inverscope.datasets.polar_campaign import build_simulation

    cfg = PolarCampaignConfig.model_validate({**TINY, "defocus_angstrom": 50, "tilt_mrad": [2, 0]})
    sim = build_simulation(cfg, 0)
    assert sim.probe.defocus_angstrom == 50 and sim.tilt_mrad == (2.0, 0.0)
    assert cfg.config_hash() != PolarCampaignConfig.model_validate(TINY).config_hash()
