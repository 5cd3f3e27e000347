"""Benchmark: the PACBED network on patterns simulated by abTEM (an independent forward model).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pacbed_abtem_heldout.py out/pacbed \\
        --json benchmarks/results/pacbed_abtem_heldout.json

Reads the study's output directory (its model and library). abTEM 1.0.11 simulates PACBEDs at the
library's settings (compound, voltage, semiangle, supercell, sampling, slices, positions per cell,
frozen phonons with abTEM's own random displacements) for a few tilts, with exits every ~1 nm;
each pattern at 5 nm or more is turned into a raw camera frame (the study's test cameras),
registered and read by the network and by nearest-template matching against inverscope's library.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np


def abtem_pacbed(cfg, tilt, exit_every):
    import abtem

    from inverscope.physics.structures import perovskite_slab
    from inverscope.physics.structures.perovskite import LATTICE_ANGSTROM

    a = LATTICE_ANGSTROM[cfg.compound]
    atoms = perovskite_slab(cfg.compound, cfg.repeat_xy, cfg.slab_cells() * a)
    sigmas = {k: v for k, v in cfg.phonon_sigmas_angstrom.items() if k in set(atoms.get_chemical_symbols())}
    phonons = abtem.FrozenPhonons(atoms, num_configs=max(1, cfg.phonon_configs), sigmas=sigmas, seed=11)
    pot = abtem.Potential(phonons, sampling=cfg.sampling_angstrom, slice_thickness=a / cfg.slices_per_cell,
                          exit_planes=exit_every)
    scan = abtem.GridScan(start=(0, 0), end=(a, a), gpts=(cfg.positions_per_cell,) * 2, endpoint=False)
    m = abtem.Probe(energy=cfg.energy_kev * 1e3, semiangle_cutoff=cfg.semiangle_mrad, tilt=tuple(tilt)).scan(
        pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle=cfg.detector_alpha * cfg.semiangle_mrad * 1.2))
    meas = m.compute(progress_bar=False)
    arr = np.asarray(meas.array)
    if arr.ndim == 6:
        arr = arr.mean(0)
    pac = arr[1:].mean(axis=(1, 2))  # exits after every `exit_every` slices
    sampling = float(meas.angular_sampling[-1])  # [mrad]
    thick = (np.arange(1, len(pac) + 1) * exit_every) * a / cfg.slices_per_cell
    return pac, thick, sampling, pot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("--tilts", default="0,0;1.5,0.5")
    ap.add_argument("--frames-per-pattern", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import abtem
    import zarr

    from inverscope.analysis.pacbed_models import fold_tilt, predict_with_uncertainty, to_input
    from inverscope.analysis.registration import register_pacbed
    from inverscope.analysis.template_matching import TemplateMatcher
    from inverscope.datasets.degrade import degrade
    from inverscope.models.io import load_model
    from inverscope.studies.pacbed import Recipe, _load, _on_grid, _references

    abtem.config.set({"precision": "float32", "diagnostics.progress_bar": False})
    out = args.study_dir
    metrics = json.loads((out / "metrics.json").read_text())
    net, meta = load_model(out / "models" / "pacbed_cnn")
    cfg_lib = zarr.open_group(str(out / "library.zarr"), mode="r").attrs["config"]
    recipe = Recipe.model_validate({"library": cfg_lib, "grid": {"pixels": meta["input"]["pixels"],
                                                                 "crop_alpha": meta["input"]["crop_alpha"]}})
    cfg, n = recipe.library, meta["input"]["pixels"]
    lib = _load(out / "library.zarr")
    templates = _on_grid(lib, recipe)
    lo = 5.0
    reference = _references(templates, lib, (lo, lib["thicknesses"][-1] / 10))
    matcher = TemplateMatcher(templates, lib["tilts"], lib["thicknesses"])
    mean, std = (np.asarray(meta["normalization"][k], np.float32) for k in ("mean", "std"))
    rng = np.random.default_rng(3)
    rows, t_sim = [], 0.0
    exit_every = max(1, int(round(10.0 / (3.905 / cfg.slices_per_cell))))
    for tilt in [tuple(float(v) for v in t.split(",")) for t in args.tilts.split(";")]:
        t0 = time.perf_counter()
        pac, thick, sampling, _ = abtem_pacbed(cfg, tilt, exit_every)
        t_sim += time.perf_counter() - t0
        for p, t in zip(pac, thick):
            if t / 10 < lo or t / 10 > lib["thicknesses"][-1] / 10:
                continue
            for _ in range(args.frames_per_pattern):
                camera = recipe.evaluation.cameras.draw(rng)
                frame, truth = degrade(np.ascontiguousarray(p), camera, rng, sampling_mrad=sampling)
                reg = register_pacbed(frame, cfg.semiangle_mrad, crop_alpha=recipe.grid.crop_alpha, out_shape=(n, n),
                                      reference=reference)
                x = to_input(reg.pattern[None], mean, std)[0]
                mu, sd = predict_with_uncertainty(net, x, meta["target_scale"], passes=16)
                match = matcher.match(reg.pattern, ~(reg.saturated | reg.outside))
                rows.append({"thickness_nm": t / 10, "tilt_mrad": fold_tilt(np.asarray(tilt)).tolist(),
                             "cnn_thickness_nm": float(mu[0, 0]), "cnn_sd_nm": float(sd[0, 0]),
                             "cnn_tilt_mrad": fold_tilt(mu[0, 1:]).tolist(),
                             "template_thickness_nm": match.thickness_angstrom / 10,
                             "scale_error": reg.mrad_per_px / truth["mrad_per_px"] - 1})
    true = np.array([r["thickness_nm"] for r in rows])
    cnn = np.abs(np.array([r["cnn_thickness_nm"] for r in rows]) - true)
    tm = np.abs(np.array([r["template_thickness_nm"] for r in rows]) - true)
    result = {"date": date.today().isoformat(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                            "abtem": abtem.__version__, "loadavg": os.getloadavg()},
              "study": str(out), "n": len(rows), "abtem_simulation_s": t_sim,
              "cnn_thickness_mae_nm": float(cnn.mean()), "cnn_thickness_median_ae_nm": float(np.median(cnn)),
              "template_thickness_mae_nm": float(tm.mean()), "template_thickness_median_ae_nm": float(np.median(tm)),
              "within_2nm_cnn": float(np.mean(cnn <= 2)), "scale_error_percent_median":
                  float(100 * np.median(np.abs([r["scale_error"] for r in rows]))),
              "inverscope_heldout_cnn_mae_nm": metrics["heldout"]["cnn"]["thickness_mae_nm"], "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
