"""Training examples from campaign stores, and a streaming dataset that simulates on the fly.

An example is one stack of CBED patterns (positions, ky, kx) with a target. For
classification every (sample, line, thickness) is an example; at an exit thickness
the step has not yet reached, a rough sample is a flat interface and is left out. For
regression (the step position as a fraction of the thickness) only rough samples count,
one thickness at a time, and the lines of a sample may be averaged (as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset

from inverscope.core.errors import InverscopeError


@dataclass
class Examples:
    """Stacks ``x`` (n, positions, ky, kx), targets ``y`` and where each came from."""

    x: np.ndarray
    y: np.ndarray
    sample: np.ndarray
    thickness_angstrom: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask) -> "Examples":
        return Examples(self.x[mask], self.y[mask], self.sample[mask], self.thickness_angstrom[mask], self.class_names)


def _labels(group, indices):
    idx = np.asarray(indices, dtype=int)
    return group["class_index"][:][idx], group["step_cells"][:][idx]


def _check_done(group, indices) -> None:
    done = group["done"][:]
    missing = [int(i) for i in indices if not done[int(i)]]
    if missing:
        raise InverscopeError(f"campaign store: samples {missing[:5]}{'...' if len(missing) > 5 else ''} are not "
                              f"simulated yet ({len(missing)} missing); run the campaign again to resume it")


def _read(group, indices) -> np.ndarray:
    data = np.stack([group["patterns"][int(i)] for i in indices]) if len(indices) else np.zeros((0, *group["patterns"].shape[1:]))
    if not np.isfinite(data).all():
        raise InverscopeError("campaign store: patterns contain NaN or Inf (a truncated or corrupted store?)")
    return data.astype(np.float32)


def classification_examples(group, indices, class_names: list[str],
                            step_fraction_range: tuple[float, float] = (0.0, 1.0)) -> Examples:
    """Every valid (sample, line, thickness) of the samples whose class is in `class_names`.

    A rough sample counts at an exit thickness t when its step lies inside the specimen and
    step / t is within `step_fraction_range` (a step in the last few per cent of the column
    is all but a flat interface); otherwise that (sample, thickness) is left out.
    """
    store_names = list(group.attrs["class_names"])
    unknown = [c for c in class_names if c not in store_names]
    if unknown:
        raise InverscopeError(f"classes: {unknown} not in the campaign (it has {store_names})")
    cls, step = _labels(group, indices)
    keep_cls = np.isin(np.asarray(store_names)[cls], class_names)
    idx = np.asarray(indices, dtype=int)[keep_cls]
    _check_done(group, idx)
    cls, step = cls[keep_cls], step[keep_cls]
    data = _read(group, idx)  # (n, L, T, P, ky, kx)
    cells = np.asarray(group.attrs["thicknesses_cells"])
    thick = np.asarray(group.attrs["thicknesses_angstrom"])
    xs, ys, ss, ts = [], [], [], []
    for t, (c_t, a_t) in enumerate(zip(cells, thick)):
        frac = step / c_t
        out_of_range = (step >= c_t) | (frac < step_fraction_range[0]) | (frac > step_fraction_range[1])
        valid = ~((np.asarray(store_names)[cls] == "rough") & out_of_range)
        for line in range(data.shape[1]):
            xs.append(data[valid, line, t])
            ys.append(np.array([class_names.index(store_names[c]) for c in cls[valid]], dtype=np.int64))
            ss.append(idx[valid])
            ts.append(np.full(valid.sum(), a_t))
    return Examples(np.concatenate(xs), np.concatenate(ys), np.concatenate(ss), np.concatenate(ts), list(class_names))


def regression_examples(group, indices, thickness_cells: int, average_lines: bool = True) -> Examples:
    """Rough samples with the step inside `thickness_cells`; target = step depth / thickness."""
    cells = list(group.attrs["thicknesses_cells"])
    if thickness_cells not in cells:
        raise InverscopeError(f"thickness_cells: got {thickness_cells}; the campaign recorded {cells}")
    names = list(group.attrs["class_names"])
    cls, step = _labels(group, indices)
    keep = (np.asarray(names)[cls] == "rough") & (step >= 1) & (step < thickness_cells)
    idx = np.asarray(indices, dtype=int)[keep]
    _check_done(group, idx)
    t = cells.index(thickness_cells)
    data = _read(group, idx)[:, :, t]  # (n, L, P, ky, kx)
    frac = (step[keep] / thickness_cells).astype(np.float32)
    a_t = float(group.attrs["thicknesses_angstrom"][t])
    if average_lines:
        return Examples(data.mean(axis=1), frac, idx, np.full(len(idx), a_t))
    n_l = data.shape[1]
    return Examples(data.reshape(-1, *data.shape[2:]), np.repeat(frac, n_l), np.repeat(idx, n_l), np.full(len(idx) * n_l, a_t))


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of sample indices 0..n-1 into train/validation/test (by sample, never by line)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    return np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test])


class StreamingSimulation(IterableDataset):
    """Fresh simulations fed straight to training, never touching disk.

    Yields ``(stack, class)`` for samples ``start, start+1, ...`` of a campaign config
    (one per line and valid thickness), simulated on ``device`` with the torch engine.
    Indices continue past ``num_samples``, so a long run never repeats a structure.
    """

    def __init__(self, config, class_names: list[str], start: int = 0, device: str = "cpu",
                 max_samples: int | None = None):
        self.config, self.class_names, self.start = config, list(class_names), int(start)
        self.device, self.max_samples = device, max_samples

    def __iter__(self):
        from inverscope.datasets.campaign import simulate_sample

        info = torch.utils.data.get_worker_info()
        step, offset = (1, 0) if info is None else (info.num_workers, info.id)
        names = list(self.config.structure.classes)
        cells = self.config.exit_cells()
        i = self.start + offset
        n = 0
        while self.max_samples is None or n < self.max_samples:
            name = names[i % len(names)]
            if name in self.class_names:
                patterns, labels = simulate_sample(self.config, i, device=self.device)
                for t, c_t in enumerate(cells):
                    if name == "rough" and labels["step_cells"] >= c_t:
                        continue
                    for line in range(patterns.shape[0]):
                        yield torch.from_numpy(patterns[line, t]), self.class_names.index(name)
                n += 1
            i += step
