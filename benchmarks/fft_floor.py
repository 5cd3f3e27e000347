"""The FFT floor under the multislice engines: one batch of 64 complex64 240 x 240 FFTs (the
multislice benchmark's batch) through torch (MKL on these wheels; what inverscope uses), scipy.fft
(pocketfft) and pyFFTW (FFTW, what abTEM uses when installed), 2 threads each.

Protocol: one warm-up call per library (plans, caches), then 7 rounds in which the libraries take
turns, 10 transforms per round; median [min, max] ms per batch and GFLOP/s by the usual
5 N log2 N count. Writes ``benchmarks/results/fft_floor.json``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fft_floor.py
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import scipy.fft as sf  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> dict:
    out_path = (argv or sys.argv[1:] or [os.path.join(os.path.dirname(__file__), "results", "fft_floor.json")])[0]
    torch.set_num_threads(2)
    b, n = 64, 240
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(b, n, n)) + 1j * rng.normal(size=(b, n, n))).astype(np.complex64)
    t = torch.from_numpy(a.copy())
    cases = {"torch": lambda: torch.fft.fft2(t, out=t),
             "scipy.fft (pocketfft)": lambda: sf.fft2(a, workers=2, overwrite_x=True)}
    try:
        import pyfftw

        pyfftw.interfaces.cache.enable()
        cases["pyfftw (FFTW)"] = lambda: pyfftw.interfaces.numpy_fft.fft2(a, threads=2, overwrite_input=True)
    except ImportError:
        pass
    for f in cases.values():
        f()
    runs = {k: [] for k in cases}
    load_before = os.getloadavg()
    for _ in range(7):
        for k, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(10):
                f()
            runs[k].append((time.perf_counter() - t0) / 10)
    flop = 5 * n * n * math.log2(n * n) * b
    res = {k: {"ms_median": 1e3 * statistics.median(v), "ms_min": 1e3 * min(v), "ms_max": 1e3 * max(v),
               "gflops": flop / statistics.median(v) / 1e9} for k, v in runs.items()}
    for k, r in res.items():
        print(f"{k:24s} {r['ms_median']:6.2f} ms [{r['ms_min']:.2f}, {r['ms_max']:.2f}]  {r['gflops']:5.1f} GFLOP/s")
    out = {"benchmark": "fft_floor", "issue": 15, "date": time.strftime("%Y-%m-%d %H:%M"), "batch": [b, n, n],
           "dtype": "complex64", "threads": 2, "torch": torch.__version__, "mkl": torch.backends.mkl.is_available(),
           "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()), "results": res}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
