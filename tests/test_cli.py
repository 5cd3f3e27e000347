"""The command line: info, simulate, demo recipe, and one-line errors that leave nothing behind."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from inverscope.core.config import load_yaml
from inverscope.core.units import wavelength_angstrom
from inverscope.studies.simulate4d import SimulateConfig, demo_config

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "structure": {"builder": "perovskite", "compound": "SrTiO3", "repeat_xy": 2, "thickness_angstrom": 7.81},
    "grid": {"gpts": 64},
    "probe": {"energy_kev": 200, "semiangle_mrad": 20},
    "scan": {"kind": "grid", "end_angstrom": [3.905, 3.905], "gpts": [3, 2]},
    "detector": {"max_angle_mrad": 40},
    "phonons": {"num_configs": 2, "sigmas_angstrom": 0.08, "seed": 1},
    "thicknesses_angstrom": [3.905, 7.81],
}


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "inverscope.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def write(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_help_and_info():
    r = run_cli("--help")
    assert r.returncode == 0 and "simulate" in r.stdout and "info" in r.stdout
    r = run_cli("info")
    assert r.returncode == 0
    assert "torch" in r.stdout and "cuda_available" in r.stdout and "torch_threads" in r.stdout


def test_simulate_writes_zarr_montage_summary(tmp_path):
    out = tmp_path / "run"
    r = run_cli("simulate", str(write(tmp_path, SMALL)), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    n = 2 * int(40.0 / (wavelength_angstrom(200e3) / 7.81 * 1e3)) + 1  # pixels within 40 mrad
    assert n == 25 and summary["shape"] == [3, 2, 2, n, n]
    g = zarr.open_group(str(out / "cbed.zarr"), mode="r")
    arr = g["cbed"][:]
    assert arr.shape == (3, 2, 2, n, n) and g.attrs["complete"] is True
    assert np.all(np.isfinite(arr)) and 0.5 < arr[..., 1, :, :].sum(axis=(-1, -2)).min() <= 1.0
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert g.attrs["calibration"]["thicknesses_angstrom"] == pytest.approx([3.905, 7.81])


def test_demo_recipe_is_the_builtin_default():
    assert load_yaml(ROOT / "recipes" / "srtio3_demo.yaml", SimulateConfig) == demo_config()


BAD = [
    ({**SMALL, "structure": {**SMALL["structure"], "thickness_angstrom": -5}}, "structure.thickness_angstrom"),
    ({**SMALL, "grid": {"sampling_angstrom": 0.4}}, "sampling_angstrom"),
    ({**SMALL, "scan": {"kind": "list", "positions_angstrom": []}}, "no probe positions"),
    ({**SMALL, "scan": {"kind": "list", "positions_angstrom": [[1.0, 1.0], [50.0, 2.0]]}}, "outside the cell"),
    ({**SMALL, "probe": {"energy_kev": 200, "semiangle_mrad": 20, "wobble": 3}}, "probe.wobble"),
    ({**SMALL, "detector": {"max_angle_mrad": 900}}, "max_angle_mrad"),
    ({**SMALL, "thicknesses_angstrom": [500.0]}, "thicknesses_angstrom"),
    ({**SMALL, "probe": {"energy_kev": 200, "semiangle_mrad": 20, "aberrations": {"C99": 1.0}}}, "aberrations.C99"),
]


@pytest.mark.parametrize("cfg,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_config_one_line_nonzero_no_output(tmp_path, cfg, needle):
    out = tmp_path / "out"
    r = run_cli("simulate", str(write(tmp_path, cfg)), "--out", str(out), "--quiet")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_unknown_element_in_structure_file(tmp_path):
    xyz = tmp_path / "weird.xyz"
    xyz.write_text('2\nLattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3 pbc="T T T"\nOg 1 1 1\nO 3 3 3\n')
    cfg = {**SMALL, "structure": {"builder": "file", "file": str(xyz)}}
    r = run_cli("simulate", str(write(tmp_path, cfg)), "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2 and "'Og'" in r.stderr and not (tmp_path / "o").exists()


def test_cif_structure_is_read_through_ase(tmp_path):
    from inverscope.physics.structures import perovskite_cell

    cif = tmp_path / "sto.cif"
    perovskite_cell().write(str(cif))
    cfg = {**SMALL, "structure": {"builder": "file", "file": str(cif), "repeat": [2, 2, 2]}}
    r = run_cli("simulate", str(write(tmp_path, cfg)), "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 0, r.stderr


def test_file_that_is_not_yaml(tmp_path):
    p = write(tmp_path, "structure: [unclosed\n  : : :\n", "broken.yaml")
    r = run_cli("simulate", str(p), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("simulate", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such config file" in r.stderr


def test_existing_output_is_kept_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    bad = {**SMALL, "grid": {"sampling_angstrom": 0.4}}
    r = run_cli("simulate", str(write(tmp_path, bad)), "--out", str(out), "--quiet")
    assert r.returncode == 2 and (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1


def test_error_without_quiet_is_still_one_line(tmp_path):
    bad = {**SMALL, "grid": {"sampling_angstrom": 0.5}, "detector": {}}
    r = run_cli("simulate", str(write(tmp_path, bad)), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "below the 20.0 mrad probe" in r.stderr
