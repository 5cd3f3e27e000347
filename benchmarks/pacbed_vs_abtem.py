"""Benchmark: one PACBED library item (a thickness series at one tilt) by inverscope and by abTEM 1.0.11.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pacbed_vs_abtem.py --json benchmarks/results/pacbed_vs_abtem.json

Same settings for both: SrTiO3 [001], 4 x 4 cells laterally, a 200 x 200 grid, slices of half a
cell, 200 kV, 13.6 mrad, tilt (1, 0.5) mrad, a 4 x 4 grid of probe positions over one unit cell,
2 frozen-phonon configurations with identical displacements (inverscope's FrozenPhonons handed
to abTEM as an AtomsEnsemble), exits every 5 slices (about 1 nm) down to --thickness-nm. abTEM
runs with its defaults (lazy dask graph, threaded scheduler, FFTW, float32) and its patterns are
averaged over the scan afterwards. The two engines run interleaved, repeat by repeat, warm
(one untimed run each first); median and spread of --repeats runs, the machine's load before and
after, and the relative L2 difference of the PACBEDs (they must agree: same physics).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thickness-nm", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import abtem
    import torch

    from inverscope.core.grid import Grid
    from inverscope.physics.multislice.detectors import PixelatedDetector
    from inverscope.physics.multislice.pacbed import pacbed
    from inverscope.physics.multislice.phonons import FrozenPhonons
    from inverscope.physics.multislice.potentials import PotentialBuilder
    from inverscope.physics.multislice.probe import Probe
    from inverscope.physics.structures import perovskite_slab

    abtem.config.set({"precision": "float32", "diagnostics.progress_bar": False})
    a, tilt, dz = 3.905, (1.0, 0.5), 3.905 / 2
    atoms = perovskite_slab("SrTiO3", 4, args.thickness_nm * 10)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (200, 200))
    phonons = FrozenPhonons({"Sr": 0.088, "Ti": 0.069, "O": 0.085}, 2, seed=0)
    configs = phonons.configurations(atoms)
    pot = PotentialBuilder(atoms, grid, dz)
    exits = pot.edges[1:][4::5]

    def ours():
        return pacbed(pot, Probe(200e3, 13.6), (a, a), positions_per_cell=4, detector=PixelatedDetector(),
                      thicknesses_angstrom=exits, phonons=[c.positions for c in configs], tilt_mrad=tilt).array

    def theirs():
        p = abtem.Potential(abtem.AtomsEnsemble(configs), gpts=(200, 200), slice_thickness=dz, exit_planes=5)
        scan = abtem.GridScan(start=(0, 0), end=(a, a), gpts=(4, 4), endpoint=False)
        m = abtem.Probe(energy=200e3, semiangle_cutoff=13.6, tilt=tilt).scan(
            p, scan=scan, detectors=abtem.PixelatedDetector(max_angle="cutoff"))
        arr = np.asarray(m.compute(progress_bar=False).array)  # (configs?, exits, 4, 4, k, k)
        if arr.ndim == 6:
            arr = arr.mean(0)
        return arr[1:].mean(axis=(1, 2))  # exits after slices 5, 10, ... ; mean over positions

    load = [os.getloadavg()]
    a0, b0 = ours(), theirs()
    n = min(len(a0), len(b0))
    k = min(a0.shape[-1], b0.shape[-1])  # the two detectors' anti-aliasing cutoffs round to 132 and 134 px

    def centre(x):
        c = x.shape[-1] // 2
        return x[:n, c - k // 2:c - k // 2 + k, c - k // 2:c - k // 2 + k]

    rel = float(np.linalg.norm(centre(a0) - centre(b0)) / np.linalg.norm(centre(b0)))
    times = {"inverscope": [], "abtem": []}
    for _ in range(args.repeats):
        for name, fn in (("inverscope", ours), ("abtem", theirs)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    load.append(os.getloadavg())
    med = {k: float(np.median(v)) for k, v in times.items()}
    patterns = n  # PACBEDs per item (one per exit)
    result = {"date": date.today().isoformat(),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "loadavg": load, "abtem": abtem.__version__},
              "settings": {"thickness_nm": args.thickness_nm, "exits": patterns, "grid": [200, 200], "positions": 16,
                           "phonon_configs": 2, "tilt_mrad": list(tilt)},
              "rel_l2_vs_abtem": rel, "seconds": times, "median_s": med,
              "spread_s": {k: [float(min(v)), float(max(v))] for k, v in times.items()},
              "pacbed_per_s": {k: patterns / v for k, v in med.items()}, "speedup": med["abtem"] / med["inverscope"]}
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
