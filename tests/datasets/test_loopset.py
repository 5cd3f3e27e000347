"""Loop sets in Zarr: seeded parameters, resume without re-simulation, foreign stores refused."""

import numpy as np
import pytest

from inverscope.core.errors import InverscopeError
from inverscope.datasets.loopset import LoopSetConfig, build_loop_set, open_loop_set
from inverscope.physics.ising import simulate_loops

CFG = LoopSetConfig(num_loops=30, chunk=8, ising={"lattice": [8, 8], "field_max": 3.0, "field_steps": 21,
                                                   "realizations": 2}, seed=4)


def test_store_round_trip_and_loop_depends_only_on_seed_and_index(tmp_path):
    ls = build_loop_set(CFG, tmp_path / "set.zarr")
    back = open_loop_set(tmp_path / "set.zarr")
    np.testing.assert_array_equal(back.m_up, ls.m_up)
    np.testing.assert_array_equal(back.params, ls.params)
    r = CFG.ranges()
    assert np.all((ls.params >= r[:, 0]) & (ls.params <= r[:, 1]))
    one = simulate_loops(ls.params[17:18], CFG.ising, seed=CFG.seed, first_index=17)
    np.testing.assert_allclose(back.m_down[17], one.m_down[0].astype(np.float32))


def test_resume_simulates_only_missing_chunks(tmp_path):
    path = tmp_path / "set.zarr"
    full = build_loop_set(CFG, path)
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    g["done"][1] = False                       # as if interrupted before chunk 1 was marked
    g["m_up"][8:16] = np.nan
    again = build_loop_set(CFG, path)
    assert again.simulated == 8
    np.testing.assert_array_equal(again.m_up, full.m_up)
    assert build_loop_set(CFG, path).simulated == 0


def test_other_config_and_incomplete_store_are_refused(tmp_path):
    path = tmp_path / "set.zarr"
    build_loop_set(CFG, path)
    other = CFG.model_copy(update={"dh_range": (0.0, 2.0)})
    with pytest.raises(InverscopeError, match="differs in dh_range"):
        build_loop_set(other, path)
    import zarr

    zarr.open_group(str(path), mode="r+")["done"][0] = False
    with pytest.raises(InverscopeError, match="incomplete"):
        open_loop_set(path)


def test_bad_ranges_are_one_line_errors():
    from inverscope.core.config import validate

    with pytest.raises(InverscopeError, match="dh_range"):
        validate(LoopSetConfig, {"dh_range": [-1.0, 1.0]}, "loops")
    with pytest.raises(InverscopeError, match="j0_range"):
        validate(LoopSetConfig, {"j0_range": [1.0, 0.0]}, "loops")
