"""inverscope: learn to read structure out of microscopy data.

A physics forward model generates labeled data, a network learns the inverse,
and the network is applied to experiments. See the README for a tour.

The objects a user touches are importable from here, e.g.::

    import inverscope as isc
    grid = isc.Grid.from_sampling((11.7, 11.7), 0.05)
    probe = isc.Probe(200e3, 20.0)

and a trained model reads data in three lines (:class:`~inverscope.analysis.predictor.Model`)::

    model = isc.Model("out/lao_sto_quick/models/classifier_paper")
    pred = model.predict("scan.hspy")          # a file, a Zarr store, or an array with sampling_mrad=...
    pred.maps["prob_rough"], pred.units["prob_rough"], pred.uncertainty

They load on first use (``import inverscope`` itself imports neither torch nor the
physics), and ``inverscope.__all__`` lists them; ``tests/test_public_api.py`` pins
the list so that a change to it is deliberate.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    # grids, probes, potentials, scans
    "Grid": "inverscope.core.grid",
    "Probe": "inverscope.physics.multislice.probe",
    "PotentialBuilder": "inverscope.physics.multislice.potentials",
    "FrozenPhonons": "inverscope.physics.multislice.phonons",
    "Scan": "inverscope.physics.multislice.scan",
    "grid_scan": "inverscope.physics.multislice.scan",
    "line_scan": "inverscope.physics.multislice.scan",
    # detectors and simulations
    "PixelatedDetector": "inverscope.physics.multislice.detectors",
    "AnnularDetector": "inverscope.physics.multislice.annular",
    "SegmentedDetector": "inverscope.physics.multislice.annular",
    "MultisliceSimulation": "inverscope.physics.multislice.simulate",
    "cbed_patterns": "inverscope.physics.multislice.simulate",
    "PRISMSimulation": "inverscope.physics.multislice.prism",
    "stem_image": "inverscope.physics.multislice.annular",
    "pacbed": "inverscope.physics.multislice.pacbed",
    "render_incoherent": "inverscope.physics.imaging.incoherent",
    # structures
    "perovskite_slab": "inverscope.physics.structures",
    # cameras and registration (simulated patterns as instruments record them, and back)
    "CameraModel": "inverscope.datasets.degrade",
    "degrade": "inverscope.datasets.degrade",
    "register_pacbed": "inverscope.analysis.registration",
    # data and models
    "open_4dstem": "inverscope.datasets.io",
    "Model": "inverscope.analysis.predictor",
    "Prediction": "inverscope.analysis.predictor",
    "load_model": "inverscope.models.io",
    "save_model": "inverscope.models.io",
    "locate_atoms": "inverscope.analysis.atom_finding",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inverscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
