"""Campaigns: Dask LocalCluster equals one process, resume simulates nothing twice, stores are checked."""

import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.datasets.campaign import CampaignConfig, open_campaign, run_campaign, simulate_sample
from inverscope.datasets.examples import (StreamingSimulation, classification_examples, regression_examples,
                                          split_indices)


def tiny_config(**over) -> CampaignConfig:
    data = {"num_samples": 6, "seed": 3, "structure": {"depth_cells": 8, "n_sto": 2, "n_lao": 2},
            "microscope": {"sampling_angstrom": 0.1, "phonon_configs": 2, "semiangle_mrad": 15, "detector_shape": [9, 9]},
            "lines": {"num_positions": 5}, "thicknesses_cells": [6, 8]}
    data.update(over)
    return CampaignConfig.model_validate(data)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "single.zarr"
    run_campaign(tiny_config(), path)
    return path


def test_local_cluster_with_two_workers_equals_single_process(single, tmp_path):
    stats = run_campaign(tiny_config(), tmp_path / "dask.zarr", n_workers=2)
    a, b = open_campaign(single), open_campaign(tmp_path / "dask.zarr")
    assert stats["simulated"] == 6 and b.attrs["complete"]
    assert np.array_equal(a["patterns"][:], b["patterns"][:])
    for key in ("class_index", "step_cells", "intermix_fraction"):
        assert np.array_equal(a[key][:], b[key][:])


def test_resume_simulates_only_what_is_missing(single, tmp_path, monkeypatch):
    cfg = tiny_config()
    path = tmp_path / "resume.zarr"
    run_campaign(cfg, path, indices=[0, 2, 5])  # an interrupted campaign
    assert not open_campaign(path).attrs["complete"]
    import inverscope.datasets.campaign as campaign

    calls = []
    real = campaign.simulate_sample
    monkeypatch.setattr(campaign, "simulate_sample", lambda c, i, **k: calls.append(i) or real(c, i, **k))
    stats = run_campaign(cfg, path)
    assert sorted(calls) == [1, 3, 4] and stats["skipped"] == 3
    assert np.array_equal(open_campaign(path)["patterns"][:], open_campaign(single)["patterns"][:])
    assert run_campaign(cfg, path)["simulated"] == 0


def test_every_sample_reproducible_from_seed_and_index(single):
    patterns, labels = simulate_sample(tiny_config(), 4)
    g = open_campaign(single)
    assert np.array_equal(patterns, g["patterns"][4])
    assert labels["class_index"] == g["class_index"][4] == 4 % 3
    other, _ = simulate_sample(tiny_config(seed=4), 4)
    assert not np.allclose(other, patterns)


def test_store_of_another_campaign_is_refused_and_untouched(single):
    before = open_campaign(single)["patterns"][:]
    with pytest.raises(InverscopeError, match="another campaign.*microscope"):
        run_campaign(tiny_config(microscope={"sampling_angstrom": 0.09, "phonon_configs": 2, "semiangle_mrad": 15,
                                             "detector_shape": [9, 9]}), single)
    assert np.array_equal(open_campaign(single)["patterns"][:], before)


def test_missing_and_foreign_stores(tmp_path):
    with pytest.raises(InverscopeError, match="no such campaign store"):
        open_campaign(tmp_path / "nope.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(InverscopeError, match="not a readable"):
        open_campaign(tmp_path / "junk.zarr")


def test_examples_respect_thickness_and_classes(single):
    g = open_campaign(single)
    ex = classification_examples(g, range(6), ["rough", "intermixed"])
    steps, cls = g["step_cells"][:], g["class_index"][:]
    n_rough_valid = sum(int(s < 6) + int(s < 8) for s, c in zip(steps, cls) if c == 0)
    assert (ex.y == 0).sum() == 2 * n_rough_valid  # two lines per sample
    assert (ex.y == 1).sum() == 2 * 2 * 2  # two intermixed samples, two thicknesses, two lines
    reg = regression_examples(g, range(6), 8)
    rough = [i for i in range(6) if cls[i] == 0 and steps[i] < 8]
    assert np.allclose(reg.y, steps[rough] / 8) and reg.x.shape[1:] == (5, 9, 9)
    tr, va, te = split_indices(20, (0.6, 0.2, 0.2), 0)
    assert len(set(tr) | set(va) | set(te)) == 20 and len(te) == 4


def test_streaming_simulation_yields_the_campaign_samples(single):
    cfg = tiny_config()
    stream = iter(StreamingSimulation(cfg, ["rough", "intermixed", "matched"], start=1, max_samples=1))
    x, y = next(stream)
    g = open_campaign(single)
    assert isinstance(x, torch.Tensor) and y == 1
    assert np.array_equal(x.numpy(), g["patterns"][1][0, 0])


def test_nan_in_store_is_reported(tmp_path):
    path = tmp_path / "nan.zarr"
    run_campaign(tiny_config(num_samples=2), path)
    import zarr

    grp = zarr.open_group(str(path), mode="r+")
    grp["patterns"][1, 0, 0, 0, 0, 0] = np.nan
    with pytest.raises(InverscopeError, match="NaN or Inf"):
        classification_examples(open_campaign(path), [0, 1], ["rough", "intermixed"])
