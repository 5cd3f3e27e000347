"""Label specs and the recognition imager (analysis.recognition)."""

import numpy as np
import pytest
import torch

from inverscope.analysis.recognition import LabelSpec, RecognitionImager, labels_to_mask
from inverscope.core.errors import InverscopeError


def test_boxes_are_half_open_and_classes_keep_their_order():
    spec = {"boxes": {"b": {"rows": [0, 2], "cols": [1, 4]},
                      "a": [{"rows": [5, 6], "cols": [0, 1]}, {"rows": [7, 9], "cols": [8, 10]}]}}
    mask, names = labels_to_mask(spec, (10, 10))
    assert names == ["b", "a"]
    assert (mask == 0).sum() == 2 * 3 and mask[0, 1] == 0 and mask[1, 3] == 0 and mask[2, 1] == -1 and mask[0, 4] == -1
    assert (mask == 1).sum() == 1 + 4 and mask[5, 0] == 1 and mask[8, 9] == 1
    assert (mask == -1).sum() == 100 - 11


def test_pixel_lists_mixed_with_boxes_and_an_explicit_order():
    spec = LabelSpec(pixels={"x": [(0, 0), (3, 2)], "y": [(1, 1)]}, boxes={"y": {"rows": [4, 5], "cols": [0, 2]}})
    mask, names = labels_to_mask(spec, (5, 3), class_names=["x", "y"])
    assert names == ["x", "y"]
    assert mask[0, 0] == mask[3, 2] == 0 and mask[1, 1] == mask[4, 0] == mask[4, 1] == 1
    assert (mask >= 0).sum() == 5


def test_integer_mask_form():
    m = -np.ones((4, 4), int)
    m[0, 0], m[3, 3] = 0, 1
    mask, names = labels_to_mask(m, (4, 4), class_names=["p", "q"])
    assert names == ["p", "q"] and np.array_equal(mask, m)


def error(spec, grid=(60, 60), **kw):
    with pytest.raises(InverscopeError) as e:
        labels_to_mask(spec, grid, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_labels_give_one_line_errors():
    box = {"rows": [0, 2], "cols": [0, 2]}
    assert error({"pixels": {"c-domain": []}, "boxes": {"a": box}}) == "labels: class 'c-domain' names no pixel"
    assert "names no pixel" in error({"boxes": {"c": {"rows": [5, 5], "cols": [0, 3]}, "a": box}})
    msg = error({"pixels": {"c": [[70, 3]], "a": [[0, 0]]}})
    assert "[70, 3]" in msg and "60x60" in msg
    msg = error({"boxes": {"c": {"rows": [50, 70], "cols": [0, 3]}, "a": box}})
    assert "'c'" in msg and "60x60" in msg
    msg = error({"boxes": {"a": box, "b": {"rows": [1, 3], "cols": [1, 3]}}})
    assert "[1, 1]" in msg and "'a'" in msg and "'b'" in msg
    assert "at least 2 classes" in error({"boxes": {"a": box}})
    assert "'zz' is not one of" in error({"boxes": {"a": box, "zz": box}}, class_names=["a", "b"])
    assert "class 'b' names no pixel" in error({"boxes": {"a": box}, "pixels": {"c": [[9, 9]]}},
                                               class_names=["a", "b", "c"])
    assert "pzt.labels:" in error({"pixels": {"a": [[0, 0]], "b": []}}, field="pzt.labels")
    assert "unknown key" in error({"boxs": {"a": box}})


def test_bad_masks_give_one_line_errors():
    m = -np.ones((4, 4), int)
    m[0, 0] = 0
    assert "'q' names no pixel" in error(m, (4, 4), class_names=["p", "q"])
    assert "shape" in error(m, (5, 4), class_names=["p", "q"])
    m[1, 1] = 7
    assert "mask value 7" in error(m, (4, 4), class_names=["p", "q"])
    assert "class names" in error(m, (4, 4))


def two_class_cube(seed=0, rows=24, cols=24, channels=64):
    """Left half a peak at channel 20, right half at channel 40, Gaussian noise."""
    rng = np.random.default_rng(seed)
    c = np.arange(channels)
    spectra = np.stack([np.exp(-0.5 * ((c - m) / 5.0) ** 2) for m in (20, 40)])
    truth = (np.arange(cols)[None, :] >= cols // 2).astype(int).repeat(rows, 0)
    cube = spectra[truth] + rng.normal(0, 0.15, (rows, cols, channels))
    mask = -np.ones((rows, cols), int)
    mask[2:6, 2:6] = 0
    mask[18:22, 18:22] = 1
    return cube, mask, truth


def test_recognition_on_well_separated_spectra():
    cube, mask, truth = two_class_cube()
    imager = RecognitionImager(hidden=[16], n_components=6, max_epochs=150, seed=0)
    assert imager.fit(cube, mask) is imager
    proba = imager.predict_proba(cube)
    assert proba.shape == (24, 24, 2)
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-6)
    pred = imager.predict(cube)
    unl = mask < 0
    assert np.mean(pred[unl] == truth[unl]) > 0.95
    assert imager.n_classes_ == 2 and imager.n_features_in_ == 64 and imager.pca_.n_components_ == 6


def test_same_seed_same_probabilities_and_global_rng_untouched():
    cube, mask, _ = two_class_cube(seed=1)
    state = torch.random.get_rng_state()
    p1 = RecognitionImager(hidden=[8], n_components=None, max_epochs=20, seed=3).fit(cube, mask).predict_proba(cube)
    p2 = RecognitionImager(hidden=[8], n_components=None, max_epochs=20, seed=3).fit(cube, mask).predict_proba(cube)
    p3 = RecognitionImager(hidden=[8], n_components=None, max_epochs=20, seed=4).fit(cube, mask).predict_proba(cube)
    assert np.array_equal(p1, p2) and not np.array_equal(p1, p3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_imager_input_errors():
    cube = two_class_cube()[0][:8, :8]
    with pytest.raises(InverscopeError, match="not fitted"):
        RecognitionImager().predict(cube)
    one = -np.ones((8, 8), int)
    one[0, 0] = 0
    with pytest.raises(InverscopeError, match="need 0..n-1 with n >= 2"):
        RecognitionImager().fit(cube, one)
    with pytest.raises(InverscopeError, match="n_components: got 500"):
        RecognitionImager(n_components=500).fit(cube, _mask8())
    im = RecognitionImager(max_epochs=2).fit(cube, _mask8())
    with pytest.raises(InverscopeError, match="cube has 10 channels but the imager was fitted on 64"):
        im.predict(cube[..., :10])


def _mask8():
    m = -np.ones((8, 8), int)
    m[0:2, 0:2], m[6:8, 6:8] = 0, 1
    return m
