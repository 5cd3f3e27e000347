"""inverscope multislice vs abTEM 1.0.11, side by side in one process.

SrTiO3 [001], 3 x 3 cells, 240 x 240 grid, slices of half a unit cell, 8 x 8 scan over
one unit cell, 200 kV, 20 mrad, 160 x 160 patterns (the anti-aliased region).
Cases: ~100 Å (50 slices) static; ~100 Å with 8 frozen-phonon configurations (the same
displaced atoms handed to both engines); ~200 Å (100 slices) static.

abTEM runs with its default settings (lazy dask graph on the threaded scheduler, FFTW,
float32). Each engine is run once to warm up (FFT plans, caches), then `--repeats`
times; the median is reported. Agreement is the relative L2 error of the 4D intensity.

    python benchmarks/multislice_vs_abtem.py --json benchmarks/results/multislice_vs_abtem.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import abtem  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inverscope.core.device import machine_info  # noqa: E402
from inverscope.core.grid import Grid  # noqa: E402
from inverscope.physics.multislice.detectors import PixelatedDetector  # noqa: E402
from inverscope.physics.multislice.phonons import FrozenPhonons  # noqa: E402
from inverscope.physics.multislice.potentials import PotentialBuilder  # noqa: E402
from inverscope.physics.multislice.probe import Probe  # noqa: E402
from inverscope.physics.multislice.scan import grid_scan  # noqa: E402
from inverscope.physics.multislice.simulate import MultisliceSimulation  # noqa: E402
from inverscope.physics.structures import perovskite_slab  # noqa: E402

A = 3.905
SIGMAS = {"Sr": 0.08, "Ti": 0.065, "O": 0.085}


def case_atoms(cells_z: int):
    return perovskite_slab("SrTiO3", 3, cells_z * A)


def run_ours(atoms, configs, device):
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (240, 240))
    sim = MultisliceSimulation(PotentialBuilder(atoms, grid, A / 2), Probe(200e3, 20.0),
                               grid_scan((0, 0), (A, A), (8, 8)), PixelatedDetector(),
                               phonons=None if configs is None else [c.positions for c in configs], device=device)
    out = sim.run().array[:, :, 0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


def run_abtem(atoms, configs):
    ens = atoms if configs is None else abtem.AtomsEnsemble(configs)
    pot = abtem.Potential(ens, gpts=(240, 240), slice_thickness=A / 2)
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=20)
    scan = abtem.GridScan(start=(0, 0), end=(A, A), gpts=(8, 8), endpoint=False)
    arr = np.asarray(probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="cutoff")).compute(
        progress_bar=False).array)
    return arr.mean(0) if arr.ndim == 5 else arr


def timed(fn, repeats):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="inverscope device (cpu, cuda)")
    ap.add_argument("--cases", default="static_100A,phonons8_100A,static_200A")
    args = ap.parse_args()
    cases = {"static_100A": (25, 0), "phonons8_100A": (25, 8), "static_200A": (50, 0)}
    results = {"machine": {**machine_info(), "processor": platform.processor() or platform.machine()},
               "date": time.strftime("%Y-%m-%d"), "abtem": abtem.__version__, "repeats": args.repeats,
               "setup": "SrTiO3 [001] 3x3 cells, 240x240, A/2 slices, 8x8 scan over one cell, 200 kV, 20 mrad, 160x160",
               "cases": {}}
    for name in args.cases.split(","):
        cells, n_ph = cases[name]
        atoms = case_atoms(cells)
        configs = FrozenPhonons(SIGMAS, n_ph, seed=0).configurations(atoms) if n_ph else None
        t_ours, ts_ours, a = timed(lambda: run_ours(atoms, configs, args.device), args.repeats)
        t_ab, ts_ab, b = timed(lambda: run_abtem(atoms, configs), args.repeats)
        a = a.reshape(b.shape)
        err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        n = 64
        row = {"thickness_angstrom": cells * A, "num_slices": 2 * cells, "num_configs": max(n_ph, 1),
               "inverscope_s_per_pattern": t_ours / n, "abtem_s_per_pattern": t_ab / n,
               "speedup": t_ab / t_ours, "rel_l2_error": err,
               "inverscope_runs_s": ts_ours, "abtem_runs_s": ts_ab, "inverscope_device": args.device}
        results["cases"][name] = row
        print(f"{name:14s} inverscope {t_ours / n * 1e3:7.2f} ms/pattern   abTEM {t_ab / n * 1e3:7.2f} ms/pattern   "
              f"speedup {t_ab / t_ours:5.2f}x   rel. L2 error {err:.2e}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
