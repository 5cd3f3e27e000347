"""The inference-speed benchmark runs (tiny size) and writes what BENCHMARKS.md quotes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "atom_inference_speed.py"


def test_atom_inference_speed_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("atom_inference_speed", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "speed.json"
    mod.main(["--size", "64", "--repeats", "1", "--threads", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"net x1 nchw", "net x1 channels_last", "net x3 nchw", "net x3 channels_last"}
    for r in res["results"].values():
        assert math.isfinite(r["mpx_per_s_median"]) and r["mpx_per_s_median"] > 0
        assert r["seconds_min"] <= r["seconds_median"] <= r["seconds_max"]
    assert res["settings"]["size_px"] == 64 and res["machine"]["device"] == "cpu"
