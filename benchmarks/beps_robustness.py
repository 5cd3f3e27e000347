"""Benchmark: the switching-loop recipe on data it was not tuned on (issue 12).

    python benchmarks/beps_robustness.py --json benchmarks/results/beps_robustness.json

Runs ``inverscope run recipes/pfm_switching.yaml`` as a user would (a subprocess, wall time
measured around it) on

1. the bundled PZT loops (60 x 60 x 96, the standard split);
2. another BEPS layout: an NSID HDF5 file written by
   :func:`inverscope.datasets.synthetic_beps.other_layout_beps` (50 x 50, 64 steps, waveform
   0 -> +V -> 0 -> -V -> 0, complex response turned by 0.7 rad, amplitude 6e-5 varying ~3x across
   the map, 2 % heavy-tailed outlier pixels), with ``data.component: projected``;
3. the same file with the old rule (one global standardization, no outlier masking), for comparison.

Each run records the held-out MSE of the autoencoder beside PCA with as many components as it has
active latents, the outlier fraction, the scaling chosen and the wall time. Targets: the
autoencoder below PCA-k on both datasets; a ``--data`` run within 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml


def _run(recipe: dict, out: Path, data: Path | None, base: Path) -> dict:
    path = base / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "inverscope.cli", "run", str(path), "--out", str(out), "--quiet"]
    if data is not None:
        cmd += ["--data", str(data)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    m = json.loads((out / "metrics.json").read_text())
    check = m.get("data_check", {})
    return {"wall_s": wall, "heldout_mse": m["model"]["heldout_mse"], "active_latents": len(m["model"]["active_latents"]),
            "pca_same_components": m["pca_same_components"], "pca5_heldout_mse": m["pca5_heldout_mse"],
            "pca16_heldout_mse": m["pca16_heldout_mse"], "verdict": m.get("verdict"),
            "outlier_fraction": check.get("outliers", {}).get("fraction"), "scaling": check.get("scaling", {}).get("chosen"),
            "train_wall_s": m["model"]["train_wall_s"], "epochs": m["model"]["epochs"]}


def _old_vs_new(path: Path, truth: np.ndarray) -> dict:
    """Units-free comparison of the two rules on the other-layout file: the variance share of the true outlier
    pixels, and PCA-16's held-out error on inlier pixels relative to those pixels' own variance (R² = 1 - that)."""
    from sklearn.decomposition import PCA

    from inverscope.datasets.io.beps import load_beps
    from inverscope.datasets.loop_preprocess import prepare_loops

    d = load_beps(path, component="projected")
    out = {}
    for rule, kw in (("old_global_no_mask", {"scaling": "global", "outlier_threshold": np.inf}),
                     ("new_auto", {})):
        p = prepare_loops(d.loops, d.voltage, **kw)
        x = p.x.astype(np.float64)
        perm = np.random.default_rng(0).permutation(len(x))
        n_tr = int(round(0.8 * len(x)))
        tr, te = np.sort(perm[:n_tr]), np.sort(perm[n_tr:])
        fit_rows = tr[~p.outliers[tr]]
        te_in = te[~truth[te]]
        pca = PCA(16, random_state=0).fit(x[fit_rows])
        rec = pca.inverse_transform(pca.transform(x[te_in]))
        centred = x[te_in] - x[te_in].mean(axis=1, keepdims=True)
        out[rule] = {"outlier_variance_share": float((x[truth] ** 2).sum() / (x ** 2).sum()),
                     "pca16_heldout_inlier_relative_mse": float(np.mean((rec - x[te_in]) ** 2) / np.mean(centred ** 2)),
                     "pixels_fitted": int(len(fit_rows))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/pfm_switching.yaml")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from inverscope.datasets.synthetic_beps import other_layout_beps, write_nsid

    base_recipe = yaml.safe_load(Path(args.recipe).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = other_layout_beps(seed=0)
        other = write_nsid(tmp / "other_layout.h5", s["response"], s["voltage"])
        complex_recipe = {**base_recipe, "data": {**(base_recipe.get("data") or {}), "component": "projected"}}
        old_rule = {**complex_recipe, "data": {**complex_recipe["data"], "scaling": "global", "outlier_threshold": None}}
        runs = {}
        for key, recipe, data in (("bundled_pzt", base_recipe, None), ("other_layout", complex_recipe, other),
                                  ("other_layout_old_rule", old_rule, other)):
            print(f"running {key} ...", flush=True)
            runs[key] = _run(recipe, tmp / key, data, tmp)
            print(json.dumps(runs[key], indent=1), flush=True)
        runs["other_layout"]["true_outlier_fraction"] = float(s["outliers"].mean())
        comparison = _old_vs_new(other, s["outliers"].ravel())
        print(json.dumps(comparison, indent=1), flush=True)
    load = os.getloadavg()
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_after": list(load), "recipe": args.recipe, "runs": runs,
              "other_layout_old_vs_new_rule": comparison}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
