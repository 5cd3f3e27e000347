"""Benchmark: cost of verifying a campaign store on resume (issue 10), beside its anchors.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/campaign_verify.py --json benchmarks/results/campaign_verify.json

A resume reads every finished sample once and checks it (finite, CRC-32 equal to the one recorded
at write time, label written): :func:`inverscope.datasets.campaign.verify_samples`. Its anchors,
in the same run and interleaved repeat by repeat: a plain read of the same store with zarr (the
floor: decompression and I/O, no checks), and the simulation of one sample of the same campaign
(what a resume would cost per sample if it trusted nothing). The store holds the quick recipe's
pattern shape (2 lines x 6 thicknesses x 16 positions x 13 x 13) with simulated-like data
(smooth patterns plus noise) written through the campaign's own writer. Median and spread of
--repeats warm runs; machine load recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    import yaml
    import zarr

    from inverscope.datasets.campaign import (CampaignConfig, _create_store, _write_sample, simulate_sample,
                                              verify_samples)

    torch.set_num_threads(2)
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "lao_sto_quick.yaml").read_text())
    cfg = CampaignConfig.model_validate({**recipe["campaign"], "num_samples": args.samples})
    tmp = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    path = tmp / "store.zarr"
    group = _create_store(path, cfg)
    shape = group["patterns"].shape[1:]
    rng = np.random.default_rng(0)
    base = rng.random(shape, dtype=np.float32)
    for i in range(args.samples):
        x = (base * (1 + 0.05 * rng.standard_normal(shape))).astype(np.float32)
        _write_sample(group, i, x, {"class_index": i % 3, "step_cells": 1, "intermix_fraction": 0.1})
    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    raw = 4.0 * args.samples * np.prod(shape)

    def plain_read():
        g = zarr.open_group(str(path), mode="r")
        for lo in range(0, args.samples, 64):
            g["patterns"][lo:lo + 64]

    def verify():
        assert verify_samples(zarr.open_group(str(path), mode="r")) == []

    def one_sample():
        simulate_sample(cfg, 0)

    load = [os.getloadavg()]
    for fn in (plain_read, verify, one_sample):  # warm
        fn()
    times = {"plain_read": [], "verify": [], "simulate_one_sample": []}
    for _ in range(args.repeats):
        for name, fn in (("plain_read", plain_read), ("verify", verify), ("simulate_one_sample", one_sample)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    load.append(os.getloadavg())
    shutil.rmtree(tmp)

    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "date": date.today().isoformat(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                      "torch_threads": torch.get_num_threads(), "loadavg": load},
        "samples": args.samples, "pattern_shape": list(shape), "store_bytes": nbytes, "raw_bytes": raw,
        "repeats": args.repeats, "seconds": times,
        "median_s": med, "spread_s": {k: [float(min(v)), float(max(v))] for k, v in times.items()},
        "verify_raw_gb_per_s": raw / med["verify"] / 1e9,
        "verify_over_plain_read": med["verify"] / med["plain_read"],
        "verify_per_sample_ms": 1e3 * med["verify"] / args.samples,
        "verify_share_of_simulation": med["verify"] / (med["simulate_one_sample"] * args.samples),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
