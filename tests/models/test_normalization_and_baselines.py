"""Input normalization constants and the scikit-learn baselines."""

import numpy as np
import torch

from inverscope.models.baselines import baseline_predict, fit_baseline
from inverscope.models.normalization import fit_normalization, normalization_tensors, normalize


def test_normalized_training_stacks_have_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.01, size=(50, 4, 5, 5)).astype(np.float32)
    x[..., 2, 2] *= 30  # a bright central pixel, as in a CBED disc
    for transform, per_pixel in (("none", True), ("sqrt", False), ("sqrt", True)):
        norm = fit_normalization(x, transform, per_pixel)
        z = normalize(torch.as_tensor(x), *normalization_tensors(norm)).numpy()
        assert np.allclose(z.reshape(-1, 5, 5).mean(axis=0 if per_pixel else None), 0, atol=1e-4)
        assert np.allclose(z.reshape(-1, 5, 5).std(axis=0 if per_pixel else None), 1, atol=1e-3)
    assert np.allclose(normalize(torch.tensor([4.0]), "sqrt", torch.tensor(0.0), torch.tensor(1.0)), 2.0)


def test_pca_logistic_baseline_separates_an_easy_problem():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    x = rng.normal(size=(200, 3, 4, 4))
    x[:, :, 0, 0] += 3.0 * (2 * y[:, None] - 1)
    model = fit_baseline("classification", x[:150], y[:150], n_components=8)
    assert (baseline_predict(model, x[150:]) == y[150:]).mean() > 0.95
    shuffled = fit_baseline("classification", x[:150], rng.permutation(y[:150]), n_components=8)
    assert (baseline_predict(shuffled, x[150:]) == y[150:]).mean() < 0.8
