"""`inverscope predict` of a polarization model over a full-size scan: a 256 x 256 scan of 256 x 256
patterns (17 GB as float32, Zarr-compressed on disk), read in chunks of scan rows; wall time,
patterns/s, peak memory, accuracy.

The scan is built from a study's held-out test store: each of its patterns (P x P at the model's
mrad/px) is repeated into an 8 x 8 block of pixels (so ``--bin 8`` gives back the stored pattern
exactly, at 1/8 of the model's mrad/px before binning), float32. The
scan is cut into vertical stripes, one per variant (a domain each), each stripe cycling through its
variant's scan positions, so the true class of every position is known and the map's accuracy must
equal the model's accuracy on the same patterns.

    python benchmarks/polar_predict_scale.py --run out/knn [--scan 256] [--work /tmp/polar_scale]

Writes ``benchmarks/results/polar_predict_scale.json``. Peak memory is the largest resident set of
the `inverscope predict` child process (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr


def build_scan(store: Path, work: Path, scan: int, up: int, exit_index: int) -> tuple[Path, np.ndarray, int]:
    g = zarr.open_group(str(store), mode="r")
    pats = np.asarray(g["patterns"][:, exit_index])  # (variants, positions, P, P)
    cls = np.asarray(g["class_index"][:])
    nv, npos, p, _ = pats.shape
    side = p * up
    path = work / "scan.zarr"
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w")
    arr = root.create_array("cbed", shape=(scan, scan, 1, side, side), chunks=(4, scan, 1, side, side),
                            dtype="float32")
    root.attrs["calibration"] = {"sampling_mrad": [float(g.attrs["sampling_mrad"][0]) / up] * 2}
    stripe = np.minimum(np.arange(scan) * nv // scan, nv - 1)  # column -> variant
    truth = np.broadcast_to(cls[stripe][None, :], (scan, scan)).astype(np.int16)
    for r0 in range(0, scan, 4):
        rows = np.arange(r0, min(r0 + 4, scan))
        block = np.empty((len(rows), scan, 1, side, side), np.float32)
        for i, r in enumerate(rows):
            idx = (r * scan + np.arange(scan)) % npos
            small = pats[stripe, idx]  # (scan, P, P)
            block[i, :, 0] = np.repeat(np.repeat(small, up, axis=1), up, axis=2)
        arr[r0:r0 + len(rows)] = block
    return path, truth, side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="output directory of a knn_polarization run")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--up", type=int, default=8, help="pixel repeat (the --bin that undoes it)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/polar_scale"))
    ap.add_argument("--chunk-rows", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "polar_predict_scale.json")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    path, truth, side = build_scan(a.run / "data" / "test.zarr", a.work, a.scan, a.up, 0)
    build_s = time.perf_counter() - t
    pred = a.work / "pred"
    shutil.rmtree(pred, ignore_errors=True)
    load = os.getloadavg()
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "inverscope.cli", "predict", str(a.run / "models" / a.model), str(path),
                        "--out", str(pred), "--bin", str(a.up), "--chunk-rows", str(a.chunk_rows), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"predict failed: {r.stderr.strip()}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    maps = np.load(pred / "maps.npz")
    summary = json.loads((pred / "summary.json").read_text())
    acc = float(np.mean(maps["class_map"] == truth))
    nbytes = a.scan * a.scan * side ** 2 * 4
    key = f"{a.model}/classification/all"
    mpath = a.run / "metrics.json"
    metrics = json.loads(mpath.read_text()) if mpath.is_file() else {"accuracy": {}}
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cores",
           "load_average_before": load, "scan": [a.scan, a.scan], "pattern_px": side, "dtype": "float32",
           "data_gb": nbytes / 1e9, "build_s": build_s, "predict_wall_s": wall,
           "patterns_per_s": a.scan * a.scan / wall, "predict_summary_patterns_per_s": summary.get("patterns_per_s"),
           "peak_rss_mb": peak_mb, "accuracy_map": acc,
           "accuracy_study_in_domain_seed0": metrics["accuracy"].get(key, {}).get("in_domain", {}).get("values", [None])[0],
           "chunk_rows": a.chunk_rows, "bin": a.up}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
