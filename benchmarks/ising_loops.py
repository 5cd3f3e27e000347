"""Benchmark: RBRF Ising hysteresis loops per second (issue 5), beside the numpy checkerboard anchor.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ising_loops.py --json benchmarks/results/ising_loops.json

Case of the issue: 32x32 lattice, 200 field steps per branch (an up and a down sweep, 400 field
values per loop), 10 disorder realizations per loop, 2 CPU cores; target >= 500 loops/s. Parameters
are drawn from two families: the recognition recipe's (J0 0-0.5, dJ 0-1, dh 0-1.5, field +-2) and
a wide one (J0 -0.5-1.5, dJ 0-1.5, dh 0-2, field +-8, which includes frustrated and square loops).
Timings are warm (kernel compiled first) and the median of --repeats runs. The anchor is the plain
numpy checkerboard relaxation of inverscope.physics.ising.reference, vectorized over the 10
realizations of a loop, timed on a few loops.
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

FAMILIES = {"recipe": ([0.0, 0.0, 0.0], [0.5, 1.0, 1.5], 2.0), "wide": ([-0.5, 0.0, 0.0], [1.5, 1.5, 2.0], 8.0)}


def _time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", type=int, default=2000)
    ap.add_argument("--anchor-loops", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from inverscope.physics.ising import IsingConfig, simulate_loops
    from inverscope.physics.ising.hysteresis import _draws
    from inverscope.physics.ising.lattice import lattice
    from inverscope.physics.ising.reference import reference_loops

    result = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "case": "32x32, 200 field steps per branch, 10 realizations per loop", "families": {}}
    for name, (lo, hi, fmax) in FAMILIES.items():
        cfg = IsingConfig(lattice=[32, 32], field_max=fmax, field_steps=200, realizations=10)
        p = np.random.default_rng(0).uniform(lo, hi, (args.loops, 3))
        simulate_loops(p[:4], cfg)                                     # compile / warm
        row = {}
        for threads in (1, 2):
            t = _time(lambda: simulate_loops(p, cfg, seed=1, threads=threads), args.repeats)
            row[f"numba_{threads}_threads_loops_per_s"] = args.loops / t
        lat = lattice((32, 32))
        t0 = time.perf_counter()
        for b in range(args.anchor_loops):
            zb, zf = _draws(1, b, 10, lat.n_bonds, lat.sites)
            reference_loops((32, 32), *p[b], cfg.fields(), zb, zf)
        row["numpy_checkerboard_loops_per_s"] = args.anchor_loops / (time.perf_counter() - t0)
        row["speedup_vs_anchor"] = row["numba_2_threads_loops_per_s"] / row["numpy_checkerboard_loops_per_s"]
        result["families"][name] = row
        print(name, json.dumps(row))
    cfg3 = IsingConfig(lattice=[10, 10, 10], field_max=8.0, field_steps=200, realizations=10)
    p = np.random.default_rng(0).uniform(*FAMILIES["wide"][:2], (args.loops // 4, 3))
    simulate_loops(p[:2], cfg3)
    t = _time(lambda: simulate_loops(p, cfg3, seed=1, threads=2), args.repeats)
    result["cubic_10x10x10_wide_2_threads_loops_per_s"] = len(p) / t
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
