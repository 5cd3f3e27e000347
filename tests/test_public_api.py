"""The public names of ``import inverscope``: pinned, so that a change to them is deliberate."""

from __future__ import annotations

import subprocess
import sys

import inverscope

PUBLIC = ["AnnularDetector", "CameraModel", "FrozenPhonons", "Grid", "Model", "MultisliceSimulation",
          "PRISMSimulation", "PixelatedDetector", "PotentialBuilder", "Prediction", "Probe", "Scan",
          "SegmentedDetector", "cbed_patterns", "degrade", "grid_scan", "line_scan", "load_model", "locate_atoms",
          "open_4dstem", "pacbed", "perovskite_slab", "register_pacbed", "render_incoherent", "save_model",
          "stem_image"]


def test_public_names_are_pinned_and_documented():
    assert inverscope.__all__ == ["__version__", *PUBLIC]
    for name in PUBLIC:
        obj = getattr(inverscope, name)
        assert obj.__name__ == name and (obj.__doc__ or "").strip(), name
    assert set(PUBLIC) <= set(dir(inverscope))


def test_unknown_name_is_an_attribute_error():
    try:
        inverscope.NoSuchThing  # noqa: B018
    except AttributeError as err:
        assert "NoSuchThing" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_import_inverscope_does_not_import_torch():
    code = "import sys, inverscope; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_a_simulation_through_the_public_names():
    import numpy as np

    import inverscope as isc

    atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    grid = isc.Grid.from_sampling(tuple(np.diag(atoms.cell)[:2]), 0.1)
    pattern = isc.cbed_patterns(isc.PotentialBuilder(atoms, grid, 3.905 / 2), isc.Probe(200e3, 20.0), [[1.0, 1.0]])
    # one position, one exit; 3.9 Å of SrTiO3 scatters nothing past the detector's cutoff: intensity conserved
    assert tuple(pattern.shape[:2]) == (1, 1) and abs(float(pattern.sum()) - 1.0) < 1e-3
