"""``isc.Model(path).predict(data)``: the Python face of ``inverscope predict`` for every model kind.

The models and data are the predict-speed benchmark's tiny cases (random weights, seeded): a stack
classifier and regressor (LAO/STO net), a polarization CNN (KNN), a PACBED CNN and an atom U-Net
ensemble. Each prediction from Python is compared with what ``inverscope predict`` itself writes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import inverscope as isc
from inverscope.analysis.maps import predict_files
from inverscope.core.errors import InverscopeError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_speed.py"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("predict_speed_for_api", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    work = tmp_path_factory.mktemp("cases")
    cache: dict = {}
    return {name: bench._prepare(name, work, bench.SIZES["tiny"], None, 0, cache)
            for name in ("lao_sto_classifier", "lao_sto_regressor", "knn_cnn", "pacbed_cnn", "atoms_unet")}


def _cli(case, out: Path, **options) -> dict:
    """What ``inverscope predict`` writes: its summary and its arrays, read straight from the files."""
    import zarr

    summary = predict_files(case.model_path, case.data_paths, out, **{**case.options, **options})
    arrays = {}
    for name in summary["outputs"].values():
        if name.endswith(".zarr"):
            group = zarr.open_group(str(out / name), mode="r")
            for key in group.array_keys():
                arrays[key] = group[key][...]
            for sub in group.group_keys():
                for key in group[sub].array_keys():
                    arrays[f"{sub}/{key}"] = group[sub][key][...]
        elif name.endswith(".npz"):
            with np.load(out / name) as z:
                arrays.update({k: z[k] for k in z.files})
    return {"summary": summary, "arrays": arrays}


def test_stack_classifier_file_and_array_agree_with_the_command_line(cases, tmp_path):
    case = cases["lao_sto_classifier"]
    ref = _cli(case, tmp_path / "cli")
    model = isc.Model(case.model_path)
    assert model.task == "classification" and model.class_names == ["rough", "intermixed"]
    assert model.sampling_mrad == (3.5, 3.5)
    pred = model.predict(case.data_paths[0])
    assert pred.out is None and pred.kind == "classification"
    assert set(pred.maps) == set(ref["arrays"]) >= {"class_index", "confidence", "prob_rough", "prob_intermixed"}
    for k, v in ref["arrays"].items():
        np.testing.assert_array_equal(pred.maps[k], v, err_msg=k)
    assert pred.units["prob_rough"] == "1" and pred.units["class_index"] == "class index"
    np.testing.assert_allclose(pred.uncertainty["class_index"], 1 - ref["arrays"]["confidence"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(pred["prob_rough"] + pred["prob_intermixed"], 1, atol=1e-5)

    # the same scan as an in-memory array at twice the detector sampling: binned by angle onto the model's
    four = isc.open_4dstem(case.data_paths[0])
    scan = np.asarray(four.data[:], np.float32)
    fine = np.repeat(np.repeat(scan, 2, axis=-2), 2, axis=-1) / 4          # 1.75 mrad/px, 26 x 26 px
    from_array = model.predict(scan, sampling_mrad=3.5)
    for k, v in ref["arrays"].items():
        np.testing.assert_array_equal(from_array.maps[k], v, err_msg=k)
    resampled = model.predict(fine, sampling_mrad=1.75)
    assert resampled.summary["resampled"]["sampling_from"] == "--sampling-mrad"
    np.testing.assert_allclose(resampled["prob_rough"], ref["arrays"]["prob_rough"], atol=2e-2)


def test_regressor_uncertainty_is_the_mc_dropout_std(cases, tmp_path):
    case = cases["lao_sto_regressor"]
    model = isc.Model(case.model_path)
    plain = model.predict(case.data_paths[0])
    assert np.isnan(plain.uncertainty["value"]).all()       # no stochastic passes: no uncertainty
    pred = model.predict(case.data_paths[0], mc_dropout=4, out=tmp_path / "kept")
    ref = _cli(case, tmp_path / "cli", mc_dropout=4)
    np.testing.assert_array_equal(pred.maps["value"], ref["arrays"]["value"])
    np.testing.assert_array_equal(pred.uncertainty["value"], ref["arrays"]["std"])
    assert (pred.uncertainty["value"] > 0).all()
    assert pred.units["value"].startswith("1 (step depth / thickness")
    assert pred.out == tmp_path / "kept" and (pred.out / "maps.png").is_file()
    assert json.loads((pred.out / "summary.json").read_text())["settings"]["mc_dropout"] == 4


def test_polarization_model_from_file_and_array(cases, tmp_path):
    case = cases["knn_cnn"]
    ref = _cli(case, tmp_path / "cli")
    model = isc.Model(case.model_path)
    assert model.task == "polarization" and len(model.class_names) == 8
    pred = model.predict(np.load(case.data_paths[0]))
    assert set(pred.maps) == set(ref["arrays"]) >= {"class_map", "angle_deg", "confidence"}
    for k, v in ref["arrays"].items():
        np.testing.assert_array_equal(pred.maps[k], v, err_msg=k)
    assert pred.units["angle_deg"] == "deg" and pred.units["com_x"] == "px"
    np.testing.assert_allclose(pred.uncertainty["class_map"], 1 - pred.maps["confidence"], atol=1e-7)


def test_pacbed_model_reads_thickness_with_its_spread(cases, tmp_path):
    case = cases["pacbed_cnn"]
    ref = _cli(case, tmp_path / "cli")
    model = isc.Model(case.model_path)
    pred = model.predict(case.data_paths[0], **case.options)
    table = pred.tables["predictions"]
    assert len(table) == ref["summary"]["n_patterns"] and {"thickness_nm", "thickness_sd_nm"} <= set(table.columns)
    assert pred.maps["thickness_nm"].shape == ref["arrays"][next(k for k in ref["arrays"] if k.endswith("thickness_nm"))].shape
    np.testing.assert_array_equal(pred.uncertainty["thickness_nm"], pred.maps["thickness_sd_nm"])
    assert pred.units["thickness_nm"] == "nm" and pred.units["tilt_x_mrad"] == "mrad"
    # one frame of the scan as a 2D array: one pattern, one row
    one = model.predict(np.load(case.data_paths[0])[0, 0])
    row = one.tables["predictions"]
    assert len(row) == 1 and np.isfinite(row["thickness_nm"]).all() and not one.maps
    np.testing.assert_array_equal(one.uncertainty["predictions/thickness_nm"], row["thickness_sd_nm"].to_numpy())
    assert one.units["mrad_per_px"] == "mrad/px" and one.units["radius_px"] == "px"


def test_atom_model_gives_a_table_with_positions_in_angstrom(cases, tmp_path):
    case = cases["atoms_unet"]
    ref = _cli(case, tmp_path / "cli")
    model = isc.Model(case.model_path)
    img = np.load(case.data_paths[0])
    pred = model.predict(img, pixel_size=case.options["pixel_size"])
    atoms = pred.tables["atoms"]
    assert len(atoms) == ref["summary"]["n_atoms"]
    assert pred.units["x_angstrom"] == "Å" and pred.units["x_px"] == "px"
    np.testing.assert_allclose(atoms["x_angstrom"], atoms["x_px"] * case.options["pixel_size"], rtol=1e-6)
    np.testing.assert_array_equal(pred.uncertainty["atoms/probability"], atoms["uncertainty"].to_numpy())
    with pytest.raises(InverscopeError, match="pixel size|pixel_size|--pixel-size"):
        model.predict(img)                                      # an array has no calibration


def test_bad_input_is_one_clear_error(cases, tmp_path):
    stack = isc.Model(cases["lao_sto_classifier"].model_path)
    with pytest.raises(InverscopeError, match=r"shape \(4, 13, 13\).*4D-STEM"):
        stack.predict(np.zeros((4, 13, 13), np.float32))
    with pytest.raises(InverscopeError, match="dtype complex64"):
        stack.predict(np.zeros((2, 2, 13, 13), np.complex64))
    with pytest.raises(InverscopeError, match="got dict"):
        stack.predict({"a": 1})
    with pytest.raises(InverscopeError, match="--crop: not used by"):
        stack.predict(cases["lao_sto_classifier"].data_paths[0], crop=8)
    with pytest.raises(InverscopeError, match="no such file"):
        stack.predict(tmp_path / "missing.hspy")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(InverscopeError):
        stack.predict(cases["lao_sto_classifier"].data_paths[0], out=busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(InverscopeError, match="needs both"):
        isc.Model(tmp_path / "nothing")
    from inverscope.models.io import save_model
    from inverscope.models.nets import build_net

    # a model of a task predict does not apply
    net = build_net("stack_cnn3d", {"input_shape": [12, 13, 13], "channels": [4, 4, 4], "num_outputs": 2})
    save_model(tmp_path / "ae", net, "stack_cnn3d", {"task": "autoencoder"})
    with pytest.raises(InverscopeError, match="task 'autoencoder'"):
        isc.Model(tmp_path / "ae")
