"""HAADF STEM image of SrTiO3 [001]: inverscope plain multislice and PRISM vs abTEM 1.0.11.

Milliseconds per probe position for one HAADF (70-200 mrad) image over an R x R raster
(default 256 x 256, ``--raster 64`` for a quick run) covering a supercell of
``--cells`` x ``--cells`` unit cells, ``--depth`` cells thick, 200 kV, 20 mrad, slices of
half a unit cell. The grid is the smallest FFT-friendly size divisible by 8 (so PRISM at
f = 1, 2, 4 fits) whose sampling keeps 200 mrad inside the anti-aliasing cutoff.

Engines: inverscope plain multislice (``ours_ms``), inverscope PRISM at each f of
``--prism-f`` (``ours_prism_f``), abTEM plain multislice (``abtem_ms``) and abTEM PRISM
(``abtem_prism_f``, f from ``--abtem-prism-f``). Every run includes building the potential
(and, for PRISM, the S-matrix), so PRISM's cost per position is amortized over the raster
it is given. Plain multislice costs the same per position whatever the raster, so the two
plain-multislice engines are timed on the first ``--ms-positions`` positions of the raster
(whole rows; recorded as ``positions_timed``) -- the full 256 x 256 raster would take hours.

Each engine is warmed up once on a 4 x 4 raster (FFT plans, caches), then the engines are
run interleaved, run by run: ``--repeats`` timed runs each, except the plain-multislice
engines, which get ``--slow-repeats`` (fewer; the JSON says how many). Reported: median,
min, max and all runs [ms per position], ``os.getloadavg()`` before and after each run,
and the rel-L2 difference of every engine's HAADF image from inverscope's plain multislice
on the positions both computed. OMP_WAIT_POLICY=PASSIVE is set before torch is imported.

    python benchmarks/prism_vs_abtem.py --raster 16 --cells 3 --depth 4   # smoke run
    python benchmarks/prism_vs_abtem.py                                    # full (slow)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inverscope.core.grid import Grid, is_fft_friendly  # noqa: E402
from inverscope.core.units import wavelength_angstrom  # noqa: E402
from inverscope.physics.multislice.annular import AnnularDetector, stem_image  # noqa: E402
from inverscope.physics.multislice.potentials import PotentialBuilder  # noqa: E402
from inverscope.physics.multislice.probe import Probe  # noqa: E402
from inverscope.physics.multislice.scan import Scan  # noqa: E402
from inverscope.physics.structures import perovskite_slab  # noqa: E402

A = 3.905
ENERGY, SEMI, INNER, OUTER = 200e3, 20.0, 70.0, 200.0


def grid_gpts(extent: float) -> int:
    """Smallest FFT-friendly n, divisible by 8, with a 2/3-cutoff of at least OUTER mrad."""
    dx_max = wavelength_angstrom(ENERGY) / (3 * OUTER * 1e-3)
    n = math.ceil(extent / dx_max)
    while not (n % 8 == 0 and is_fft_friendly(n)):
        n += 1
    return n


def raster_positions(extent: float, raster: int, rows: int | None = None) -> np.ndarray:
    xs = np.arange(raster) * (extent / raster)
    rx = xs if rows is None else xs[:rows]
    return np.stack(np.meshgrid(rx, xs, indexing="ij"), -1).reshape(-1, 2)


class Case:
    def __init__(self, cells: int, depth: int, device: str):
        self.atoms = perovskite_slab("SrTiO3", cells, depth * A)
        self.extent = float(self.atoms.cell[0, 0])
        self.gpts = grid_gpts(self.extent)
        self.grid = Grid((self.extent, self.extent), (self.gpts, self.gpts))
        self.device = device

    def ours(self, raster: int, rows: int | None, method: str, f: int = 1) -> np.ndarray:
        pos = raster_positions(self.extent, raster, rows)
        pot = PotentialBuilder(self.atoms, self.grid, A / 2)
        res = stem_image(pot, Probe(ENERGY, SEMI), Scan(pos), [AnnularDetector.haadf(INNER, OUTER)], method=method,
                         interpolation=f, device=self.device)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return res.images["haadf"][:, -1]

    def abtem(self, raster: int, rows: int | None, method: str, f: int = 1) -> np.ndarray:
        import abtem

        step = self.extent / raster
        n_rows = raster if rows is None else rows
        scan = abtem.GridScan(start=(0, 0), end=(n_rows * step, self.extent), gpts=(n_rows, raster), endpoint=False)
        pot = abtem.Potential(self.atoms, gpts=(self.gpts, self.gpts), slice_thickness=A / 2)
        det = abtem.AnnularDetector(INNER, OUTER)
        if method == "multislice":
            m = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMI).scan(pot, scan=scan, detectors=det)
        else:
            m = abtem.SMatrix(potential=pot, energy=ENERGY, semiangle_cutoff=SEMI, interpolation=f).scan(
                scan=scan, detectors=det)
        return np.asarray(m.compute(progress_bar=False).array).reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raster", type=int, default=256, help="probe positions per side")
    ap.add_argument("--cells", type=int, default=8, help="unit cells per side of the supercell")
    ap.add_argument("--depth", type=int, default=10, help="unit cells along the beam")
    ap.add_argument("--prism-f", default="1,2,4")
    ap.add_argument("--abtem-prism-f", default="1,2,4")
    ap.add_argument("--ms-positions", type=int, default=1024, help="positions timed for plain multislice")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slow-repeats", type=int, default=3, help="timed runs of the plain-multislice engines")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="inverscope device (cpu, cuda)")
    ap.add_argument("--no-abtem", action="store_true")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "prism_vs_abtem.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    case = Case(args.cells, args.depth, args.device)
    r = args.raster
    ms_rows = max(1, min(r, args.ms_positions // r))
    engines = {"ours_ms": (case.ours, "multislice", 1, ms_rows, args.slow_repeats)}
    for f in (int(x) for x in args.prism_f.split(",") if x):
        engines[f"ours_prism_{f}"] = (case.ours, "prism", f, None, args.repeats)
    if not args.no_abtem:
        import abtem

        abtem.config.set({"precision": "float32", "diagnostics.progress_bar": False, "device": "cpu"})
        engines["abtem_ms"] = (case.abtem, "multislice", 1, ms_rows, args.slow_repeats)
        for f in (int(x) for x in args.abtem_prism_f.split(",") if x):
            engines[f"abtem_prism_{f}"] = (case.abtem, "prism", f, None, args.repeats)

    for name, (fn, method, f, rows, _) in engines.items():  # warm-up
        fn(4, None, method, f)
    runs = {name: [] for name in engines}
    loads = {name: [] for name in engines}
    images = {}
    for rep in range(max(e[4] for e in engines.values())):
        for name, (fn, method, f, rows, reps) in engines.items():
            if rep >= reps:
                continue
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            images[name] = fn(r, rows, method, f)
            dt = time.perf_counter() - t0
            n_pos = r * (r if rows is None else rows)
            runs[name].append(dt / n_pos * 1e3)
            loads[name].append([list(load0), list(os.getloadavg())])
            print(f"run {rep} {name:14s} {runs[name][-1]:9.3f} ms/position ({n_pos} positions, {dt:.2f} s) "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)

    ref = images["ours_ms"]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"processor": platform.processor() or platform.machine(),
                                                             "cpu_count": os.cpu_count(), "torch_threads": args.threads},
        "torch": torch.__version__, "device": args.device, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "setup": {"structure": f"SrTiO3 [001] {args.cells}x{args.cells} cells, {args.depth} cells thick",
                  "extent_angstrom": case.extent, "gpts": case.gpts, "sampling_angstrom": case.extent / case.gpts,
                  "slice_angstrom": A / 2, "energy_ev": ENERGY, "semiangle_mrad": SEMI,
                  "haadf_mrad": [INNER, OUTER], "raster": r, "smoke": r < 256},
        "engines": {},
    }
    if not args.no_abtem:
        results["abtem"] = abtem.__version__
    for name, (fn, method, f, rows, reps) in engines.items():
        v = runs[name]
        n_common = min(len(ref), len(images[name]))
        err = float(np.linalg.norm(images[name][:n_common] - ref[:n_common]) / np.linalg.norm(ref[:n_common]))
        results["engines"][name] = {
            "method": method, "interpolation": f, "positions_timed": r * (r if rows is None else rows),
            "repeats": len(v), "median_ms_per_position": statistics.median(v), "min_ms": min(v), "max_ms": max(v),
            "runs_ms": v, "loadavg_before_after": loads[name], "rel_l2_vs_ours_ms": err,
        }
        print(f"{name:14s} median {statistics.median(v):9.3f} ms/position  [{min(v):.3f}, {max(v):.3f}]  "
              f"n={len(v)}  rel-L2 vs ours_ms {err:.2e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
