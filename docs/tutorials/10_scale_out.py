# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scale out: Dask clusters and GPUs
#
# A study's simulations are independent samples, so they spread over as many processes,
# machines or GPUs as you have; its training runs on one GPU or several with PyTorch
# Lightning. This tutorial shows how inverscope does both, at toy scale on a laptop. You will
# learn how to:
#
# - run a simulation campaign on a Dask cluster (here a `LocalCluster` of two processes) and
#   your own parameter sweep on the same cluster;
# - rely on the Zarr store being resumable: rerun a campaign after an interruption and nothing
#   finished is simulated again;
# - point the same code at a real cluster (`scheduler="tcp://host:8786"`, or
#   `inverscope run ... --scheduler`);
# - choose the GPU when there is one (`device="cuda"`), chosen at run time so the same notebook
#   runs on a CPU;
# - train on several GPUs and nodes with Lightning's distributed data parallel (DDP).

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from dask.distributed import Client, LocalCluster

import inverscope as isc
from inverscope.datasets.campaign import CampaignConfig, open_campaign, run_campaign

workdir = tempfile.TemporaryDirectory()   # everything this notebook writes goes here
tmp = Path(workdir.name)

# %% [markdown]
# ## 1. Where to compute: CPU or GPU
#
# Every simulation and training call takes a `device`. Pick it at run time, so that the same
# code uses a GPU where there is one and the CPU elsewhere:

# %%
device = "cuda" if torch.cuda.is_available() else "cpu"
print("device:", device, "| torch", torch.__version__, "| CPU threads", torch.get_num_threads())

# %% [markdown]
# ## 2. A cluster
#
# `LocalCluster` starts a scheduler and worker *processes* on this machine (each with one
# thread: the multislice FFTs are then not fighting each other for cores). On an HPC system
# you would start the scheduler and workers with dask-jobqueue (SLURM, PBS) or `dask
# scheduler` / `dask worker`, and connect with `Client("tcp://host:8786")`. Everything below
# only needs the scheduler's address.
#
# A note for scripts: Dask starts worker processes with Python's "spawn" method, which
# re-imports the main *file*. In Jupyter there is none, so nothing else is needed; in a
# plain script, put the cluster code under `if __name__ == "__main__":` (or, as this file
# does when it runs as a script, let the workers fork instead).

# %%
if "__file__" in globals():   # run as a plain script (python 10_scale_out.py), not in Jupyter: see below
    import dask
    dask.config.set({"distributed.worker.multiprocessing-method": "fork"})
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40)
client = Client(cluster)
print("scheduler:", cluster.scheduler_address, "| workers:", len(client.scheduler_info()["workers"]))

# %% [markdown]
# ## 3. A campaign on the cluster
#
# The LAO/STO campaign of tutorial 02, cut down: 12 structures, 8 cells (31 Å) along the beam,
# no frozen phonons. `run_campaign(cfg, store, scheduler=address)` sends one task per sample
# to the workers; each writes its patterns, labels and checksum into the Zarr store and then
# sets the sample's `done` flag. (`n_workers=2` instead of `scheduler=` would start and stop a
# `LocalCluster` of its own.)
#
# To see the resume, we first simulate only samples 0-5, as if the job had been killed
# half-way.

# %%
cfg = CampaignConfig.model_validate({
    "name": "scale_out_demo", "seed": 1, "num_samples": 12,
    "structure": {"depth_cells": 8, "step_range": [0.1, 0.9]},
    "microscope": {"phonon_configs": 0},
    "lines": {"num_positions": 12, "y_start_cells": -1.0, "y_stop_cells": 1.75},
    "compute": {"device": device},
})
store = tmp / "campaign.zarr"
first = run_campaign(cfg, store, scheduler=cluster.scheduler_address, indices=range(6))
print(f"first run: simulated {first['simulated']}, wall {first['wall_s']:.1f} s")
print("done flags:", open_campaign(store)["done"][:].astype(int))

# %% [markdown]
# ## 4. Resume: rerun, and only what is missing is simulated
#
# Rerunning the same campaign on the same store verifies every finished sample (present,
# finite, matching its checksum), simulates the damaged ones again, then the pending ones.
# A third run finds nothing to do. A store of a *different* campaign is refused rather than
# overwritten.

# %%
second = run_campaign(cfg, store, scheduler=cluster.scheduler_address)
third = run_campaign(cfg, store, scheduler=cluster.scheduler_address)
for name, r in [("second", second), ("third", third)]:
    print(f"{name} run: simulated {r['simulated']}, skipped {r['skipped']}, repaired {r['repaired']}, "
          f"wall {r['wall_s']:.1f} s")
group = open_campaign(store)
print("done flags:", group["done"][:].astype(int), "| patterns", group["patterns"].shape)

# %% [markdown]
# ## 5. Your own sweep on the same cluster
#
# Any function can go to the workers. Here, a HAADF line profile across a SrTiO3 cell at five
# defoci, one task each, with `client.map`. Each task builds its own potential and probe; the
# arguments and results travel between processes, so keep them small (paths or parameters in,
# small arrays out) and let big results go straight to disk, as the campaign does.

# %%
def haadf_profile(defocus_angstrom: float, device: str = "cpu") -> np.ndarray:
    import torch as _torch

    import inverscope as _isc
    _torch.set_num_threads(1)
    atoms = _isc.perovskite_slab("SrTiO3", repeat_xy=2, thickness_angstrom=20.0)
    grid = _isc.Grid.from_sampling(np.diag(atoms.cell)[:2], 0.06)
    potential = _isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=1.9525)
    probe = _isc.Probe(200e3, 20.0, defocus_angstrom=defocus_angstrom)
    scan = _isc.line_scan((0.0, 0.0), (3.905, 3.905), 16)
    images = _isc.stem_image(potential, probe, scan, _isc.AnnularDetector.haadf(70.0, 140.0), device=device)
    return images.image("haadf")


defoci = [-60.0, -30.0, 0.0, 30.0, 60.0]
futures = client.map(haadf_profile, defoci, device=device)
profiles = client.gather(futures)

x = np.linspace(0, 1, 16) * np.hypot(3.905, 3.905)
fig, ax = plt.subplots(figsize=(6, 3.5))
for df, prof in zip(defoci, profiles):
    ax.plot(x, prof, label=f"defocus {df:+.0f} Å")
ax.set_xlabel("position along [110] from a Sr column [Å]")
ax.set_ylabel("HAADF (fraction of beam)")
ax.set_title("HAADF across SrTiO3 (20 Å), one Dask task per defocus")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. A real cluster, from the command line
#
# The study runner takes the same choices:
#
# ```bash
# # a LocalCluster of N worker processes on this machine
# inverscope run recipes/lao_sto_quick.yaml --out out/lao_sto_quick --workers 2
# # an existing Dask cluster (e.g. started by dask-jobqueue on SLURM): give the scheduler's address
# inverscope run recipes/lao_sto_paper.yaml --out DIR --scheduler tcp://HOST:8786
# # only the simulation campaign; interrupt it and rerun the same line to resume
# inverscope campaign recipes/lao_sto_quick.yaml --out lao.zarr --scheduler tcp://HOST:8786
# ```
#
# Every worker must have inverscope installed, with the same version. The scheduler address is
# checked (10 s) before anything is written. The README recommends starting workers without
# Dask's default `MALLOC_TRIM_THRESHOLD_=65536` (set `distributed.nanny.pre-spawn-environ`
# in the Dask config); the `LocalCluster` that inverscope starts drops it. BENCHMARKS.md
# measured in 2026-11 that on 2 cores the in-process runner simulated 0.75 samples/s of the
# quick recipe and a 2-process `LocalCluster` 0.40 samples/s on 12-sample campaigns, where
# starting the cluster dominates; over the recipe's 180 samples the cluster reached 0.72
# samples/s. A cluster pays off with more cores than that, or more machines.
#
# ## 7. GPUs
#
# - Simulations: `MultisliceSimulation(..., device="cuda")`, `isc.stem_image(..., device=...)`,
#   `isc.pacbed(..., device=...)`; campaigns take `compute: {device: auto}` (the GPU when there
#   is one) in the recipe or `"compute": {"device": "cuda"}` in the config, as above.
# - `inverscope.datasets.examples.StreamingSimulation(cfg, classes, device="cuda")` simulates
#   fresh training data on the GPU while the network trains, without touching the disk.
# - Inference: `inverscope predict MODEL DATA --out DIR --device cuda`.
#
# A short simulation with the device picked above:

# %%
atoms = isc.perovskite_slab("SrTiO3", repeat_xy=2, thickness_angstrom=40.0)
grid = isc.Grid.from_sampling(np.diag(atoms.cell)[:2], 0.06)
sim = isc.MultisliceSimulation(isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=1.9525),
                               isc.Probe(200e3, 20.0), isc.grid_scan((0, 0), (3.905, 3.905), (4, 4)),
                               isc.PixelatedDetector(max_angle_mrad=40), device=device)
t0 = time.perf_counter()
result = sim.run()
print(f"{result.array.shape} on {device} in {time.perf_counter() - t0:.2f} s")

# %% [markdown]
# ## 8. Training on several GPUs: Lightning DDP
#
# The LAO/STO training runs on PyTorch Lightning, so several GPUs and nodes are flags:
#
# ```bash
# inverscope run recipes/lao_sto_paper.yaml --out DIR --scheduler tcp://HOST:8786 --devices 4 --num-nodes 2
# ```
#
# `--devices` is the number of GPUs per node and `--num-nodes` the number of nodes; with more
# than one device Lightning uses distributed data parallel (one process per GPU, gradients
# averaged). From Python the same fields sit in the training config,
# `inverscope.training.supervised.TrainConfig(accelerator="auto", devices=4, num_nodes=2)`.
# On SLURM, start one task per GPU (`srun --ntasks-per-node=4`) and Lightning reads the
# rank from the environment. Checkpoints (`last.ckpt`) let an interrupted training resume at
# the next epoch.
#
# ## 9. Close the cluster
#
# Close the client and the cluster when you are done, so the worker processes exit.

# %%
client.close()
cluster.close()
workdir.cleanup()
print("closed")
