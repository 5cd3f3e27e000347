"""Seeds: every random choice takes an explicit seed or numpy Generator."""

from __future__ import annotations

import numpy as np
import torch


def rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed (or the Generator itself)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def torch_generator(seed: int, device: str = "cpu") -> torch.Generator:
    """A torch Generator seeded with `seed` on `device` (global state untouched)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
