"""The predict-speed benchmark runs every model kind end to end (tiny sizes) and writes what BENCHMARKS.md quotes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("predict_speed", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_every_kind_is_timed_end_to_end(bench, tmp_path):
    out = tmp_path / "speed.json"
    report = bench.main(["--tiny", "--out", str(out), "--work", str(tmp_path / "work")])
    saved = json.loads(out.read_text())
    assert saved["results"].keys() == report["results"].keys() == set(bench.KINDS)
    assert saved["settings"]["tiny"] and saved["settings"]["repeats"] == 1
    assert saved["machine"]["torch"] and saved["machine"]["torch_threads"] == 2
    for kind, r in saved["results"].items():
        assert r["unit"] == {"atoms_unet": "Mpx", "pacbed_cnn": "PACBED images"}.get(kind, "patterns"), kind
        assert _positive(r["count"]) and len(r["predict_s"]) == len(r["network_s"]) == 1, kind
        assert all(_positive(r["rate_per_s"][k]) for k in ("median", "min", "max")), (kind, r["rate_per_s"])
        assert r["rate_per_s"]["min"] <= r["rate_per_s"]["median"] <= r["rate_per_s"]["max"]
        assert _positive(r["network_rate_per_s"]) and _positive(r["network_share"]), (kind, r["network_s"])
        assert r["network_what"] and len(r["loadavg_before"]) == 3 and len(r["loadavg_after"]) == 3
        assert r["model"]["weights"].startswith("random")
    assert saved["results"]["lao_sto_classifier"]["count"] == 8 * 20                 # patterns of the scan
    assert saved["results"]["pacbed_cnn"]["count"] == 4                              # 2 x 2 PACBED frames
    assert saved["results"]["atoms_unet"]["count"] == pytest.approx(128 * 128 / 1e6)  # Mpx
    assert _positive(saved["results"]["atoms_unet"]["network_grad_enabled_s"][0])
    assert not (tmp_path / "work" / "out" / "knn_cnn" / "run1").exists()              # outputs cleaned up


def test_only_restricts_the_cases(bench, tmp_path):
    out = tmp_path / "speed.json"
    bench.main(["--tiny", "--only", "lao_sto_regressor,knn_vgg11", "--out", str(out)])
    assert set(json.loads(out.read_text())["results"]) == {"lao_sto_regressor", "knn_vgg11"}
    with pytest.raises(SystemExit, match="unknown case"):
        bench.main(["--tiny", "--only", "nonsense", "--out", str(out)])
