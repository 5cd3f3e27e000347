"""Unsupervised baselines and latent analysis for spectroscopic cubes (scikit-learn).

PCA and NMF decompositions with maps and held-out reconstruction error, divisive k-means
(k = 2, then k = 2 within each cluster, as in Agar et al. 2019), active-latent detection and
the paper's generated curves (one latent swept through the decoder from the mean embedding
of the pixels nearest each value).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF, PCA
from sklearn.exceptions import ConvergenceWarning


def pca_baseline(train: np.ndarray, test: np.ndarray, n: int, seed: int = 0) -> dict:
    """PCA(n) fitted on `train`: held-out MSE, scores of all data and the components."""
    p = PCA(n_components=n, random_state=seed).fit(train)
    rec = p.inverse_transform(p.transform(test))
    return {"model": p, "heldout_mse": float(np.mean((rec - test) ** 2)),
            "explained_variance_ratio": p.explained_variance_ratio_.tolist()}


def nmf_baseline(x: np.ndarray, n: int, seed: int = 0) -> dict:
    """NMF(n) on data shifted to be non-negative: maps (n_pixels, n), components (of x - shift) and MSE."""
    shift = float(min(0.0, x.min()))
    m = NMF(n_components=n, init="nndsvda", max_iter=500, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:          # reported in the result, not printed
        warnings.simplefilter("always", ConvergenceWarning)
        w = m.fit_transform(x - shift)
    rec = w @ m.components_ + shift
    return {"maps": w, "components": m.components_, "mse": float(np.mean((rec - x) ** 2)), "shift": shift,
            "converged": not any(issubclass(c.category, ConvergenceWarning) for c in caught), "iterations": int(m.n_iter_)}


def divisive_kmeans(x: np.ndarray, seed: int = 0, k: int = 2, sub_k: int = 2) -> dict:
    """k-means into `k`, then `sub_k` within each: labels (top, sub, combined) and mean curves."""
    top = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
    sub = np.zeros_like(top)
    for c in range(k):
        m = top == c
        if m.sum() >= sub_k:
            sub[m] = KMeans(sub_k, n_init=10, random_state=seed).fit_predict(x[m])
    combined = top * sub_k + sub
    means = np.stack([x[combined == c].mean(0) if (combined == c).any() else np.full(x.shape[1], np.nan)
                      for c in range(k * sub_k)])
    return {"top": top, "sub": sub, "combined": combined, "means": means}


def active_latents(z: np.ndarray, threshold: float = 1e-6) -> list[int]:
    """Latents that are non-zero for at least one pixel (ReLU latents that never fire are dead)."""
    return [int(i) for i in np.flatnonzero(np.abs(z).max(axis=0) > threshold)]


def generated_curves(decode, z: np.ndarray, latent: int, n_values: int = 5, n_nearest: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Sweep `latent` over its range; for each value start from the mean embedding of the
    `n_nearest` pixels whose latent is closest to it, set the latent and decode.

    Returns (values (n_values,), curves (n_values, steps)).
    """
    values = np.linspace(z[:, latent].min(), z[:, latent].max(), n_values)
    base = []
    for v in values:
        idx = np.argsort(np.abs(z[:, latent] - v))[:n_nearest]
        e = z[idx].mean(0)
        e[latent] = v
        base.append(e)
    with torch.inference_mode():
        curves = decode(torch.as_tensor(np.array(base), dtype=torch.float32)).numpy()
    return values, curves
