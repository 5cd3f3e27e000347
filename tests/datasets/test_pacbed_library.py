"""PACBED libraries: one store item per tilt, a thickness series each, run like every store job."""

import numpy as np
import pytest
import yaml
import zarr

from inverscope.datasets.pacbed_library import PACBEDLibraryConfig, build_tilt_simulation, run_library
from inverscope.physics.multislice.pacbed import average_over_positions
from tests.studies.cli_helpers import cli, one_line_error

TINY = {"kind": "pacbed_library", "thickness_nm": [1, 6, 1], "tilt_max_mrad": 2, "tilt_step_mrad": 1,
        "phonon_configs": 0, "repeat_xy": 2, "sampling_angstrom": 0.08, "positions_per_cell": 4, "detector_pixels": 33}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lib")
    (tmp / "lib.yaml").write_text(yaml.safe_dump(TINY))
    r = cli("campaign", tmp / "lib.yaml", "--out", tmp / "lib.zarr", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "6 tilts simulated" in r.stderr
    return tmp / "lib.zarr"


def test_tilts_thicknesses_and_labels(library):
    g = zarr.open_group(str(library), mode="r")
    cfg = PACBEDLibraryConfig.model_validate(TINY)
    assert g["patterns"].shape == (6, 6, 33, 33) and g.attrs["complete"] is True
    assert g["tilt_x_mrad"][:].tolist() == [0, 1, 1, 2, 2, 2] and g["tilt_y_mrad"][:].tolist() == [0, 0, 1, 0, 1, 2]
    t = np.asarray(g.attrs["thicknesses_angstrom"])
    assert np.all(np.abs(t - cfg.thicknesses_angstrom()) <= 3.905 / 4 + 1e-9)  # nearest slice boundary
    assert g.attrs["sampling_mrad"] == pytest.approx([2 * 2.5 * 13.6 / 32] * 2)


def test_items_are_the_pacbed_of_their_tilt_and_carry_its_symmetry(library):
    g = zarr.open_group(str(library), mode="r")
    cfg = PACBEDLibraryConfig.model_validate(TINY)
    direct = average_over_positions(build_tilt_simulation(cfg, 4)).array  # tilt (2, 1)
    assert np.array_equal(g["patterns"][4], direct)
    on_zone, along_x, diagonal = g["patterns"][0, -1], g["patterns"][3, -1], g["patterns"][5, -1]
    scale = on_zone.max()
    assert np.abs(on_zone - on_zone.T).max() < 1e-5 * scale and np.abs(on_zone - on_zone[::-1]).max() < 1e-5 * scale
    assert np.abs(along_x - along_x[:, ::-1]).max() < 1e-5 * scale   # tilt along x keeps the ky mirror
    assert np.abs(diagonal - diagonal.T).max() < 1e-5 * scale        # tilt along the diagonal keeps kx <-> ky
    assert np.abs(along_x - on_zone).max() > 1e-2 * scale


def test_a_damaged_tilt_is_simulated_again(library, tmp_path):
    import shutil

    path = tmp_path / "lib.zarr"
    shutil.copytree(library, path)
    shutil.rmtree(path / "patterns" / "c" / "2")
    stats = run_library(PACBEDLibraryConfig.model_validate(TINY), path)
    assert stats["repaired"] == [2] and stats["simulated"] == 1
    a, b = (zarr.open_group(str(p), mode="r")["patterns"][:] for p in (library, path))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("over,needle", [
    ({"detector_pixels": 32}, "detector_pixels: got 32; must be odd"),
    ({"thickness_nm": [5, 1, 1]}, "thickness_nm"),
    ({"semiangle_mrad": 40, "sampling_angstrom": 0.3}, "sampling_angstrom"),
    ({"kind": "xrd_library"}, "kind: got 'xrd_library'; allowed: lao_sto, pacbed_library"),
    ({"thickness_nm": [1, 100000, 1]}, "of memory"),
], ids=["even-detector", "thickness-order", "coarse-grid", "unknown-kind", "absurd-thickness"])
def test_bad_library_configs_are_one_line_and_write_nothing(tmp_path, over, needle):
    (tmp_path / "lib.yaml").write_text(yaml.safe_dump({**TINY, **over}))
    assert needle in one_line_error(cli("campaign", tmp_path / "lib.yaml", "--out", tmp_path / "lib.zarr", "--quiet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.yaml"]


def test_load_library_reads_a_finished_store_and_refuses_others(library, tmp_path):
    import shutil

    from inverscope.core.errors import InverscopeError
    from inverscope.datasets.pacbed_library import load_library

    lib = load_library(library)
    g = zarr.open_group(str(library), mode="r")
    assert lib["patterns"].shape == (6, 6, 33, 33) and np.array_equal(lib["patterns"], g["patterns"][:])
    assert lib["tilts_mrad"].tolist() == [[0, 0], [1, 0], [1, 1], [2, 0], [2, 1], [2, 2]]
    assert lib["thicknesses_angstrom"].tolist() == g.attrs["thicknesses_angstrom"]
    assert lib["sampling_mrad"] == pytest.approx(2 * 2.5 * 13.6 / 32) and lib["compound"] == "SrTiO3"
    assert (lib["semiangle_mrad"], lib["energy_ev"]) == (13.6, 200e3)
    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(library, unfinished)
    done = zarr.open_group(str(unfinished), mode="r+")["done"]
    done[2] = False
    with pytest.raises(InverscopeError, match="1 of 6 tilts not simulated yet"):
        load_library(unfinished)
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["schema"] = "inverscope.campaign/1"
    with pytest.raises(InverscopeError, match="not a PACBED library store"):
        load_library(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InverscopeError):
        load_library(tmp_path / "plain")
