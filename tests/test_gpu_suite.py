"""The GPU benchmark suite (benchmarks/gpu_suite.py) runs end to end on a CPU at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"
SECTIONS = ("multislice", "campaign", "training", "inference")


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_tiny_cpu_run_writes_every_section(suite, tmp_path):
    out = tmp_path / "gpu_suite.json"
    returned = suite.main(["--device", "cpu", "--tiny", "--out", str(out)])
    data = json.loads(out.read_text())  # valid JSON (no NaN), written atomically
    assert data["schema"] == suite.SCHEMA and data["complete"] is True
    assert returned["complete"] is True
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"
    env = data["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["cpu_count"] >= 1 and env["date"]
    assert set(data["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        sec = data["sections"][name]
        assert sec["status"] in ("ok", "error", "skipped"), (name, sec)
        if sec["status"] == "ok":
            assert sec["headline"], name
            bad = {k: v for k, v in sec["headline"].items() if not _positive_finite(v)}
            assert not bad, (name, bad)
        else:
            assert sec.get("error") or sec.get("skipped"), (name, sec)
    # on a CPU these three must produce figures, not errors
    for name in ("multislice", "training", "inference"):
        assert data["sections"][name]["status"] == "ok", data["sections"][name].get("traceback")

    ms = data["sections"]["multislice"]
    assert _positive_finite(ms["headline"]["device_patterns_per_s_static"])
    assert _positive_finite(ms["headline"]["device_patterns_per_s_phonons"])
    assert _positive_finite(ms["headline"]["cpu_patterns_per_s_static"])
    assert ms["agreement_rel_l2"]["device_vs_cpu_static"] < 1e-4  # same device here: the same numbers
    assert ms["abtem_cpu"]  # figures, "not_installed" or an error, but recorded
    if "static" in ms["abtem_cpu"] and "rel_l2_vs_inverscope_cpu" in ms["abtem_cpu"]["static"]:
        assert ms["abtem_cpu"]["static"]["rel_l2_vs_inverscope_cpu"] < 1e-3

    tr = data["sections"]["training"]["models"]
    for model in suite.TINY_MODELS:
        assert _positive_finite(tr[model]["fp32"]["steps_per_s"]), tr[model]
        assert "steps_per_s" in tr[model]["bf16"] or "error" in tr[model]["bf16"]

    inf = data["sections"]["inference"]
    for model in suite.TINY_MODELS:
        best = inf["models"][model]["best"]
        assert _positive_finite(best["patterns_per_s"]) and best["batch_size"] in data["sizes"]["infer_batches"]
        assert isinstance(best["reaches_100k_patterns_per_s"], bool)
        assert inf["models"][model]["compiled"]["skipped"]  # compile is off on CPU by default

    if data["sections"]["campaign"]["status"] == "ok":
        assert _positive_finite(data["sections"]["campaign"]["headline"]["lao_sto_quick_samples_per_s"])


def test_zero_budget_skips_everything_and_still_writes_json(suite, tmp_path):
    out = tmp_path / "sub" / "gpu_suite.json"
    suite.main(["--device", "cpu", "--tiny", "--budget-s", "0", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["complete"] is True and set(data["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        sec = data["sections"][name]
        assert sec["status"] == "skipped" and "budget" in sec["skipped"], (name, sec)


def test_only_selects_sections(suite, tmp_path):
    out = tmp_path / "gpu_suite.json"
    suite.main(["--device", "cpu", "--tiny", "--only", "campaign", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["sections"]["campaign"]["status"] in ("ok", "error")
    for name in ("multislice", "training", "inference"):
        assert data["sections"][name] == {"status": "skipped", "skipped": "not selected (--only)"}
    with pytest.raises(SystemExit):
        suite.main(["--device", "cpu", "--only", "nope", "--out", str(out)])
