"""Benchmark: the LAO/STO quick recipe end to end, and campaign throughput on Dask vs in-process.

    python benchmarks/lao_sto_quick.py --json benchmarks/results/lao_sto_quick.json [--skip-throughput]

Records the recipe's wall time per stage and its headline accuracies (target: <= 600 s on 2 CPU
cores, >= 97 % held-out accuracy in the paper's mode, matched mode reported beside it), then the
campaign throughput (samples per second) for the same config run in-process (torch threads =
cores), on a LocalCluster with one worker process per core, and on a LocalCluster with Dask's
default worker environment (MALLOC_TRIM_THRESHOLD_=65536), which inverscope overrides.
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


def throughput(cfg, n: int, workers: int, default_env: bool = False) -> float:
    from inverscope.datasets.campaign import run_campaign

    cfg = cfg.model_copy(update={"num_samples": n})
    d = Path(tempfile.mkdtemp())
    try:
        if default_env:  # bypass inverscope's override by running the cluster ourselves
            from dask.distributed import Client, LocalCluster

            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=40) as c:
                t0 = time.perf_counter()
                run_campaign(cfg, d / "c.zarr", scheduler=c.scheduler_address)
                return n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_campaign(cfg, d / "c.zarr", n_workers=workers)
        return n / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/lao_sto_quick.yaml")
    ap.add_argument("--json", default=None)
    ap.add_argument("--out", default=None, help="run directory (default: a fresh temporary one)")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()

    import torch

    from inverscope.studies.lao_sto import load_recipe, run_study

    recipe = load_recipe(args.recipe)
    out = Path(args.out or tempfile.mkdtemp(prefix="lao_sto_quick_"))
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: the benchmark times a fresh run")
    t0 = time.perf_counter()
    metrics = run_study(recipe, out, log=lambda m: print(">", m, flush=True))
    wall = time.perf_counter() - t0
    result = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "recipe": args.recipe, "wall_s": wall, "metrics": metrics}
    if not args.skip_throughput:
        cores = len(os.sched_getaffinity(0))
        n = 2 * cores * 3
        result["throughput_samples_per_s"] = {
            "in_process": throughput(recipe.campaign, n, 0),
            f"local_cluster_{cores}_workers": throughput(recipe.campaign, n, cores),
            f"local_cluster_{cores}_workers_dask_default_env": throughput(recipe.campaign, n, cores, default_env=True),
        }
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=1))
    print(json.dumps({k: {m: v[m] for m in ("accuracy", "baseline_pca_logreg_accuracy")}
                      for k, v in metrics["classification"].items()}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
