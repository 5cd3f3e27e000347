"""inverscope multislice vs abTEM 1.0.11, side by side in one process.

SrTiO3 [001], 3 x 3 cells, 240 x 240 grid, slices of half a unit cell, 8 x 8 scan over
one unit cell, 200 kV, 20 mrad, 160 x 160 patterns (the anti-aliased region).
Cases: ~100 Å (50 slices) static; ~100 Å with 8 frozen-phonon configurations (the same
displaced atoms handed to both engines); ~200 Å (100 slices) static.

abTEM runs with its default settings (lazy dask graph on the threaded scheduler, FFTW,
float32). Each engine is run once to warm up (FFT plans, caches), then the two run in turn,
``--repeats`` rounds (default 5; the order alternates per round), so that a busy spell on the
shared machine hits both; the median, min and max per pattern and the load average before and
after each case are reported. Agreement is the relative L2 error of the 4D intensity.
``--profile`` adds a torch-profiler breakdown of inverscope's time per stage (potential,
probe, multislice loop, detector) and per op kind (FFT, multiplies, ...).

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


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Warm each engine once, then run them in turn, ``repeats`` rounds (the order alternates per
    round so neither always runs right after the other); per engine the run times and last output."""
    outs = {k: fn() for k, fn in fns.items()}  # warm-up (FFT plans, caches, dask pools)
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            outs[k] = fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times, outs


def stats(ts: list[float], n: int) -> dict:
    med = statistics.median(ts)
    return {"s_per_pattern_median": med / n, "s_per_pattern_min": min(ts) / n, "s_per_pattern_max": max(ts) / n,
            "spread": (max(ts) - min(ts)) / med, "runs_s": ts}


def profile_ours(atoms, configs, device) -> dict:
    """Where inverscope's time goes: torch profiler, self CPU time grouped by stage and op kind."""
    from torch.profiler import ProfilerActivity, profile

    run_ours(atoms, configs, device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run_ours(atoms, configs, device)
        wall = time.perf_counter() - t0
    stages, ops = {}, {}
    for ev in prof.key_averages():
        if ev.key.startswith("inverscope."):
            stages[ev.key] = ev.cpu_time_total / 1e6
        elif ev.key.startswith("aten::"):
            kind = ("fft" if "fft" in ev.key else "multiply" if ev.key in ("aten::mul", "aten::mul_") else
                    "abs/square (detector)" if ev.key in ("aten::abs", "aten::square", "aten::pow", "aten::real",
                                                          "aten::imag", "aten::view_as_real") else
                    "exp/phase" if ev.key in ("aten::exp", "aten::polar", "aten::cos", "aten::sin") else
                    "gather/copy" if ev.key in ("aten::index", "aten::copy_", "aten::index_select", "aten::to",
                                                 "aten::_to_copy", "aten::clone", "aten::contiguous") else "other")
            ops[kind] = ops.get(kind, 0.0) + ev.self_cpu_time_total / 1e6
    return {"wall_s": wall, "stages_s": stages, "aten_self_s": ops}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved warm rounds per case (>= 5 for BENCHMARKS.md)")
    ap.add_argument("--device", default="cpu", help="inverscope device (cpu, cuda)")
    ap.add_argument("--cases", default="static_100A,phonons8_100A,static_200A")
    ap.add_argument("--profile", action="store_true", help="also profile inverscope per stage (one extra run per case)")
    args = ap.parse_args()
    cases = {"static_100A": (25, 0), "phonons8_100A": (25, 8), "static_200A": (50, 0)}
    results = {"machine": {**machine_info(), "processor": platform.processor() or platform.machine()},
               "date": time.strftime("%Y-%m-%d %H:%M"), "abtem": abtem.__version__, "repeats": args.repeats,
               "protocol": "one warm-up each, then interleaved rounds (order alternating), median [min, max]",
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads(),
               "setup": "SrTiO3 [001] 3x3 cells, 240x240, A/2 slices, 8x8 scan over one cell, 200 kV, 20 mrad, 160x160",
               "cases": {}}
    for name in args.cases.split(","):
        cells, n_ph = cases[name]
        atoms = case_atoms(cells)
        configs = FrozenPhonons(SIGMAS, n_ph, seed=0).configurations(atoms) if n_ph else None
        load_before = loadavg()
        times, outs = interleaved({"inverscope": lambda: run_ours(atoms, configs, args.device),
                                   "abtem": lambda: run_abtem(atoms, configs)}, args.repeats)
        load_after = loadavg()
        a, b = outs["inverscope"], outs["abtem"]
        a = a.reshape(b.shape)
        err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        n = 64
        ours, theirs = stats(times["inverscope"], n), stats(times["abtem"], n)
        row = {"thickness_angstrom": cells * A, "num_slices": 2 * cells, "num_configs": max(n_ph, 1),
               "inverscope": ours, "abtem": theirs,
               "inverscope_s_per_pattern": ours["s_per_pattern_median"], "abtem_s_per_pattern": theirs["s_per_pattern_median"],
               "speedup": theirs["s_per_pattern_median"] / ours["s_per_pattern_median"],
               "speedup_per_round": [tb / ta for ta, tb in zip(times["inverscope"], times["abtem"])],
               "rel_l2_error": err, "inverscope_device": args.device,
               "loadavg_before": load_before, "loadavg_after": load_after}
        if args.profile:
            row["profile"] = profile_ours(atoms, configs, args.device)
        results["cases"][name] = row
        print(f"{name:14s} inverscope {ours['s_per_pattern_median'] * 1e3:7.2f} ms/pattern "
              f"[{ours['s_per_pattern_min'] * 1e3:.2f}, {ours['s_per_pattern_max'] * 1e3:.2f}]   "
              f"abTEM {theirs['s_per_pattern_median'] * 1e3:7.2f} [{theirs['s_per_pattern_min'] * 1e3:.2f}, "
              f"{theirs['s_per_pattern_max'] * 1e3:.2f}]   speedup {row['speedup']:5.2f}x   rel. L2 {err:.2e}   "
              f"load {load_before[0]:.2f} -> {load_after[0]:.2f}", flush=True)
        if args.profile:
            pr = row["profile"]
            print("   stages [s]: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(pr["stages_s"].items())) +
                  "; ops (self) [s]: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(pr["aten_self_s"].items(),
                                                                                  key=lambda kv: -kv[1])) +
                  f"; wall {pr['wall_s']:.3f}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
