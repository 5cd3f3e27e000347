"""Input normalization of stack networks, saved in model metadata.

``transform: sqrt`` takes the square root of the intensities first: for Poisson counts it
makes the noise nearly the same in every pixel (the variance-stabilizing Anscombe idea), so
faint detector pixels outside the central disc do not get their noise blown up by a
per-pixel standardization. Then ``(x - mean) / std`` with a scalar or per-pixel (ky, kx)
mean and std from the training set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from inverscope.core.errors import InverscopeError


def _forward(x, transform: str):
    if transform == "sqrt":
        return np.sqrt(np.clip(x, 0, None)) if isinstance(x, np.ndarray) else torch.sqrt(torch.clamp(x, min=0))
    return x


def fit_normalization(x: np.ndarray, transform: Literal["none", "sqrt"] = "sqrt", per_pixel: bool = False) -> dict:
    """Constants from training stacks x (n, P, ky, kx) [fraction of the beam per pixel]."""
    y = _forward(np.asarray(x, dtype=np.float64), transform).reshape(-1, *x.shape[-2:])
    if per_pixel:
        std = y.std(axis=0)
        return {"transform": transform, "mean": y.mean(axis=0).tolist(),
                "std": np.maximum(std, 1e-6 * std.max() + 1e-12).tolist()}
    return {"transform": transform, "mean": float(y.mean()), "std": float(max(y.std(), 1e-12))}


def normalization_tensors(norm: dict, device="cpu") -> tuple[str, torch.Tensor, torch.Tensor]:
    try:
        transform = norm.get("transform", "none")
        mean = torch.as_tensor(norm["mean"], dtype=torch.float32, device=device)
        std = torch.as_tensor(norm["std"], dtype=torch.float32, device=device)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InverscopeError("model metadata: 'normalization' needs 'mean' and 'std'") from None
    if transform not in ("none", "sqrt"):
        raise InverscopeError(f"model metadata: normalization.transform {transform!r}; allowed: none, sqrt")
    return transform, mean, std


def normalize(x: torch.Tensor, transform: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (_forward(x, transform) - mean) / std
