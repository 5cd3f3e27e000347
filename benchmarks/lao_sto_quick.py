"""Benchmark: the LAO/STO quick recipe end to end, and campaign throughput on Dask vs in-process.

    python benchmarks/lao_sto_quick.py --json benchmarks/results/lao_sto_quick.json [--skip-throughput]
    python benchmarks/lao_sto_quick.py --throughput-only --repeats 5 --json benchmarks/results/campaign_throughput.json

Records the recipe's wall time per stage and its headline accuracies (target: <= 600 s on 2 CPU
cores, >= 97 % held-out accuracy in the paper's mode, matched mode reported beside it), then the
campaign throughput (samples per second) for the same config run in-process (torch threads =
cores), on a LocalCluster with one worker process per core, and on a LocalCluster with Dask's
default worker environment (MALLOC_TRIM_THRESHOLD_=65536), which inverscope overrides.

Throughput protocol: one warm-up campaign per runner, then ``--repeats`` rounds in which the runners
take turns (the order reversed every other round), each round a fresh store of ``2 x cores x 3``
samples; median [min, max] samples/s per runner and the load average before and after. Each timed
campaign includes starting its cluster (what a user pays).
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
            from dask.distributed import LocalCluster

            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=40) as c:
                t0 = time.perf_counter()
                run_campaign(cfg, d / "c.zarr", scheduler=c.scheduler_address)
                return n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_campaign(cfg, d / "c.zarr", n_workers=workers)
        return n / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def throughput_table(cfg, repeats: int) -> dict:
    """Interleaved campaign throughput of the three runners (see the module docstring)."""
    import statistics

    cores = len(os.sched_getaffinity(0))
    n = 2 * cores * 3
    runners = {"in_process": (0, False), f"local_cluster_{cores}_workers": (cores, False),
               f"local_cluster_{cores}_workers_dask_default_env": (cores, True)}
    load_before = [round(v, 2) for v in os.getloadavg()]
    for name, (w, env) in runners.items():  # warm-up
        throughput(cfg.model_copy(update={"num_samples": 2 * cores}), 2 * cores, w, env)
    runs = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            w, env = runners[name]
            runs[name].append(throughput(cfg, n, w, env))
            print(f"round {r + 1}: {name} {runs[name][-1]:.3f} samples/s", flush=True)
    return {"samples_per_campaign": n, "repeats": repeats, "loadavg_before": load_before,
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "runners": {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                        for name, v in runs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/lao_sto_quick.yaml")
    ap.add_argument("--json", default=None)
    ap.add_argument("--out", default=None, help="run directory (default: a fresh temporary one)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--throughput-only", action="store_true", help="only the interleaved campaign throughput")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved throughput rounds")
    args = ap.parse_args()

    import torch

    from inverscope.studies.lao_sto import load_recipe, run_study

    recipe = load_recipe(args.recipe)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.throughput_only:
        result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "torch": torch.__version__,
                  "recipe": args.recipe, "throughput": throughput_table(recipe.campaign, args.repeats)}
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="lao_sto_quick_"))
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: the benchmark times a fresh run")
    t0 = time.perf_counter()
    metrics = run_study(recipe, out, log=lambda m: print(">", m, flush=True))
    wall = time.perf_counter() - t0
    result = {"date": str(date.today()), "machine": machine, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "recipe": args.recipe, "wall_s": wall, "metrics": metrics}
    if not args.skip_throughput:
        result["throughput_samples_per_s"] = throughput_table(recipe.campaign, args.repeats)
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=1))
    print(json.dumps({k: {m: v[m] for m in ("accuracy", "baseline_pca_logreg_accuracy")}
                      for k, v in metrics["classification"].items()}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
