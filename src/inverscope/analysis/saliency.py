"""Saliency maps through captum (Simonyan et al. 2013), summed over the stack axis as in Oxley et al. 2020."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import Saliency


def stack_saliency(model: torch.nn.Module, x: np.ndarray, target: int | None = None) -> np.ndarray:
    """|d output / d input| for stacks x (n, P, ky, kx), summed over positions -> (n, ky, kx).

    `model` maps raw stacks to outputs (normalization inside); `target` is the class
    index (classification) or None (single regression output).
    """
    model.eval()
    inp = torch.as_tensor(x, dtype=torch.float32).requires_grad_(True)
    attr = Saliency(model).attribute(inp, target=target if target is not None else 0, abs=True)
    return attr.detach().sum(dim=1).numpy()
