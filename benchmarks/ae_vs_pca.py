"""Benchmark: the PCA-residual autoencoder against PCA with as many components, on the bundled PZT loops.

    python benchmarks/ae_vs_pca.py                      # default search, about 4 min on 1 thread
    python benchmarks/ae_vs_pca.py --full               # also the slower variants
    python benchmarks/ae_vs_pca.py --variants mlp64_drop --ks 5 8 16 --seeds 0 1 2

Standard split of the BE-PFM switching study: published preprocessing of the bundled PZT
piezoresponse loops, seeded (0) permutation, first 80 % train, rest held out; MSE in standardized
units on the held-out loops. Every variant is trained by ``fit_autoencoder`` (the study's trainer)
after ``init_from_data`` on the training loops, so it starts exactly at PCA-k (checked: the
``init_heldout_mse`` column equals PCA-k). All k latents of this network are active (signed scores).
Writes ``benchmarks/results/ae_vs_pca.json`` (machine, date, every row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

#: name -> (network config without steps/latent, training config); lr 1e-3, no L1 (signed latent)
VARIANTS = {
    "mlp128": ({"encoder_hidden": [128], "decoder_hidden": [128]}, {}),
    "mlp64_drop": ({"encoder_hidden": [64], "decoder_hidden": [64], "dropout": 0.1}, {}),
    "dec_only128": ({"encoder_hidden": [], "decoder_hidden": [128]}, {}),
    "mlp64_drop_fixed_basis": ({"encoder_hidden": [64], "decoder_hidden": [64], "dropout": 0.1, "train_basis": False}, {}),
    "mlp256x2": ({"encoder_hidden": [256, 256], "decoder_hidden": [256, 256]}, {}),
    # --full only (slower, or shown not to help)
    "per_step128x2": ({"encoder_hidden": [64], "decoder_hidden": [128, 128], "decoder": "per_step"}, {"max_epochs": 60}),
    "mlp64_drop_study_train": ({"encoder_hidden": [64], "decoder_hidden": [64], "dropout": 0.1},
                               {"lr": 3e-3, "l1_activity": 1e-3}),  # the study recipe's current training settings
}
DEFAULT_VARIANTS = ["mlp128", "mlp64_drop", "mlp64_drop_fixed_basis", "dec_only128", "mlp256x2"]
#: the recommended study recipe (latent 16) is also rerun with these seeds, to show the seed spread
RECIPE, RECIPE_SEEDS = ("mlp64_drop_fixed_basis", 16), [1, 2]
TRAIN = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "max_epochs": 100, "max_minutes": 5.0,
         "l1_activity": 0.0}


def split():
    """The study's standard split: (train, test) float32 loops."""
    import numpy as np

    from inverscope.datasets.io.beps import load_example
    from inverscope.datasets.preprocess import published_preprocessing

    data = load_example("pzt_piezoresponse")
    x, _ = published_preprocessing(data.flat())
    x = x.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    n_train = round(0.8 * len(x))
    return x[np.sort(perm[:n_train])], x[np.sort(perm[n_train:])]


def run_variant(name: str, k: int, seed: int, x_tr, x_te, pca_mse: float) -> dict:
    """Train one variant at latent k; held-out MSE, active latents and train wall time (s)."""
    import numpy as np
    import torch

    from inverscope.analysis.decomposition import active_latents
    from inverscope.models.nets.pca_residual_ae import PCAResidualAE, PCAResidualAEConfig
    from inverscope.training.autoencoder import AETrainConfig, fit_autoencoder, reconstruct

    net_cfg, train_over = VARIANTS[name]
    cfg = PCAResidualAEConfig(steps=x_tr.shape[1], latent=k, **net_cfg)
    tcfg = AETrainConfig(**{**TRAIN, **train_over, "seed": seed, "progress_bar": False})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = PCAResidualAE.from_data(cfg, x_tr)
    init = float(np.mean((reconstruct(net, x_te)[0] - x_te) ** 2))
    net.train()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit_autoencoder(net, x_tr, x_te, tcfg, tmp, name)
    rec_te, z_te = reconstruct(net, x_te)
    rec_tr, z_tr = reconstruct(net, x_tr)
    mse = float(np.mean((rec_te - x_te) ** 2))
    return {"variant": name, "k": k, "seed": seed, "heldout_mse": mse, "pca_k_heldout_mse": pca_mse,
            "ratio_to_pca": mse / pca_mse, "init_heldout_mse": init,
            "train_mse": float(np.mean((rec_tr - x_tr) ** 2)),
            "active_latents": len(active_latents(np.concatenate([z_tr, z_te]))),
            "train_wall_s": res.wall_s, "epochs": res.epochs,
            "model_config": cfg.model_dump(mode="json"),
            "train_config": tcfg.model_dump(mode="json", exclude={"progress_bar", "accelerator", "devices", "precision"})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS))
    ap.add_argument("--ks", nargs="+", type=int, default=[5, 8, 16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--no-recipe-seeds", action="store_true", help=f"skip rerunning {RECIPE} with seeds {RECIPE_SEEDS}")
    ap.add_argument("--full", action="store_true", help="every variant (about 12 min on 1 thread)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/ae_vs_pca.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from inverscope.analysis.decomposition import pca_baseline

    variants = args.variants or (list(VARIANTS) if args.full else DEFAULT_VARIANTS)
    t0 = time.perf_counter()
    x_tr, x_te = split()
    pca = {k: pca_baseline(x_tr, x_te, k)["heldout_mse"] for k in sorted(set(args.ks) | {5, 8, 16})}
    print("PCA held-out MSE: " + ", ".join(f"PCA-{k} {v:.6f}" for k, v in pca.items()), flush=True)
    rows = []
    for k in args.ks:
        for name in variants:
            extra = [] if args.no_recipe_seeds or (name, k) != RECIPE else [s for s in RECIPE_SEEDS if s not in args.seeds]
            for seed in list(args.seeds) + extra:
                r = run_variant(name, k, seed, x_tr, x_te, pca[k])
                rows.append(r)
                print(f"{name:24s} k={k:2d} seed={seed} held-out {r['heldout_mse']:.6f} PCA-{k} {r['pca_k_heldout_mse']:.6f} "
                      f"ratio {r['ratio_to_pca']:.3f} (init {r['init_heldout_mse']:.6f}, train {r['train_mse']:.6f}) "
                      f"active {r['active_latents']} {r['train_wall_s']:.1f} s", flush=True)
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} torch thread(s)", "torch": torch.__version__,
              "split": "bundled pzt_piezoresponse, published_preprocessing, rng(0) permutation, 80/20",
              "pca_heldout_mse": {str(k): v for k, v in pca.items()}, "rows": rows,
              "total_wall_s": time.perf_counter() - t0}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"total {result['total_wall_s']:.0f} s; wrote {args.json}")


if __name__ == "__main__":
    main()
