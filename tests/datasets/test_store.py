"""Chunk-by-chunk Zarr writing equals the in-memory result."""

import numpy as np
import pytest

from inverscope.core.grid import Grid
from inverscope.datasets.store import ZarrCBEDWriter, _runs, open_cbed
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import grid_scan
from inverscope.physics.multislice.simulate import MultisliceSimulation
from inverscope.physics.structures import perovskite_slab


def test_runs_split_flat_ranges_along_the_last_axis():
    assert [(i, j) for i, j, _ in _runs(3, 11, (3, 5))] == [(3, 5), (5, 10), (10, 11)]


def test_streamed_zarr_equals_in_memory(tmp_path):
    atoms = perovskite_slab("SrTiO3", 2, 7.81)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    pot = PotentialBuilder(atoms, grid, 1.9525)
    scan = grid_scan((0, 0), (3.905, 3.905), (4, 5))
    held = MultisliceSimulation(pot, Probe(200e3, 20.0), scan).run().array
    sim = MultisliceSimulation(pot, Probe(200e3, 20.0), scan, batch_size=3)  # batches straddle scan rows
    writer = ZarrCBEDWriter(tmp_path / "c.zarr", scan.shape, sim.output_shape[2:], {"note": "test"}, chunk_positions=2)
    result = sim.run(sink=writer)
    writer.close()
    assert result.array is None
    arr, attrs = open_cbed(tmp_path / "c.zarr")
    assert attrs["complete"] is True and arr.chunks == (1, 2, 1, 42, 42)
    np.testing.assert_array_equal(arr[:], held)


def test_open_cbed_rejects_other_paths(tmp_path):
    from inverscope.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not an inverscope CBED Zarr store"):
        open_cbed(tmp_path / "nothing.zarr")


def test_result_larger_than_memory_must_be_streamed(monkeypatch):
    from inverscope.core.errors import InverscopeError
    from inverscope.physics.multislice import simulate

    atoms = perovskite_slab("SrTiO3", 2, 7.81)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (64, 64))
    sim = MultisliceSimulation(PotentialBuilder(atoms, grid, 1.9525), Probe(200e3, 20.0), grid_scan((0, 0), (1, 1), (2, 2)))
    monkeypatch.setattr(simulate, "_available_memory_bytes", lambda: 1000)
    with pytest.raises(InverscopeError, match="ZarrCBEDWriter"):
        sim.run()
