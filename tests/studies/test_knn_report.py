"""The KNN polarization report from hand-built metrics and evaluation (no simulation, no training)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from inverscope.studies.knn_polarization_report import write_report

K, N_SCANS, P = 4, 8, 16
LABELS = ["[100]", "[110]", "[010]", "[-110]", "[-100]", "[-1-10]", "[0-10]", "[1-10]"]
CONDS = ["random_split", "in_domain", "descan_2px"]
NETS = ["cnn/classification/all", "cnn/prototype/filtered"]


class _Recipe:
    name = "knn_synthetic"

    def model_dump(self, mode="json"):
        return {"study": "knn_polarization", "name": self.name, "training": {"seeds": [0, 1], "epochs": 2}}


def _patterns(y: np.ndarray, rng) -> np.ndarray:
    """Gaussian discs shifted along each class's angle (so the CoM points somewhere)."""
    yy, xx = np.mgrid[:P, :P].astype(float)
    ang = np.radians(45.0 * y)
    cy, cx = P // 2 - 0.6 * np.sin(ang), P // 2 + 0.6 * np.cos(ang)
    x = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 8.0)
    return (x + 0.01 * rng.random(x.shape)).astype(np.float32)


def _stat(values, ref=None):
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std()), "n_seeds": int(v.size), "values": v.tolist(),
            "drop": 0.0 if ref is None else ref - float(v.mean())}


def _roc(auc):
    return {"auroc": auc, "n_positive": 4, "n_negative": 12, "fpr": [0.0, 0.25, 0.5, 1.0],
            "tpr": [0.0, 0.5, 0.75, 1.0], "thresholds": [None, 0.9, 0.5, 0.1]}


def _inputs(rng):
    n = N_SCANS * K * K
    y = np.repeat(np.arange(8), K * K)
    base = {"x": _patterns(y, rng), "y": y, "scan": np.repeat(np.arange(N_SCANS), K * K),
            "position": np.tile(np.arange(K * K), N_SCANS), "k": K, "n_scans": N_SCANS, "repeat_xy": 2,
            "positions_fraction": np.zeros((K * K, 2)), "class_labels": LABELS}
    conditions = {"random_split": {**base, "description": "paper split"},
                  "in_domain": {**base, "description": "held out"},
                  "descan_2px": {**base, "description": "applied descan"}}

    def noisy(p):
        return np.where(rng.random(n) < p, rng.integers(0, 8, n), y)

    first = {key: {"net": None, "result": None, "pred_in_domain": noisy(0.3), "confidence": rng.random(n),
                   "patterns_per_s": 1e4} for key in NETS}
    base_pred = {"pca_knn": noisy(0.5), "com": noisy(0.2), "com_threshold": noisy(0.25)}
    evaluation = {"conditions": conditions, "nets": {"first": first, "runs": {}, "accuracy": {}},
                  "base_pred": base_pred, "train": base}

    accuracy = {}
    for key, seeds in ((NETS[0], 2), (NETS[1], 1), ("pca_knn", 1), ("com", 1), ("com_threshold", 1)):
        vals = {c: rng.uniform(0.3, 0.9, seeds) for c in CONDS}
        ref = float(vals["in_domain"].mean())
        accuracy[key] = {c: _stat(vals[c], ref) for c in CONDS}
    nets_head = {k: {"mean": accuracy[k]["in_domain"]["mean"], "std": accuracy[k]["in_domain"]["std"]} for k in NETS}
    periodic = {"positions_per_cell": 2, "fraction_above_mean_com": 0.4}
    for key in [*NETS, *base_pred]:
        periodic[key] = {"error_rate": 0.3, "folded_error": rng.random((2, 2)).tolist(), "harmonic_share": 0.5,
                         "harmonic_share_chance": 0.2, "accuracy_above_mean_com": 0.8,
                         "accuracy_below_mean_com": None}
    scores = {"disagreement": {"wall": 0.7, "a_vacancy": float("nan"), "all": 0.65},
              "softmax_max": {"wall": 0.6, "a_vacancy": 0.55, "all": 0.58}}
    scene = {"rows": 4, "cols": 8, "truth_classes": np.where(np.arange(8) < 4, 1, 5)[None].repeat(4, 0).tolist(),
             "masks": ["a_vacancy", "wall"], "simulate_s": 0.1, "models": {}, "maps": {}}
    scene["truth_classes"][0][0] = -1
    for key in NETS:
        scene["models"][key] = {
            "accuracy_clean": 0.5, "scores": sorted(scores), "negatives": "clean", "auroc": scores,
            "wall_errors": {s: {"wall": {"median_angstrom": 1.0, "max_angstrom": 2.0, "mean_angstrom": 1.2,
                                         "bias_angstrom": 0.1, "n_lines": 4, "orientation": "vertical"}}
                            for s in scores},
            "skipped": {}, "roc": {s: {d: _roc(v) for d, v in per.items()} for s, per in scores.items()}}
        scene["maps"][key] = {"classes": rng.integers(0, 8, (4, 8)).tolist(),
                              "scores": {s: rng.random((4, 8)).tolist() for s in scores}}
    hist = [{"epoch": e, "train_loss": 2.0 - e, "train_acc": 0.2 + 0.1 * e, "val_loss": 2.0, "val_acc": 0.2 + 0.05 * e,
             "elapsed_s": e} for e in range(3)]
    metrics = {
        "study": "knn_polarization", "name": "knn_synthetic",
        "data": {"stores": {"test": {"simulated": 8, "skipped": 0, "wall_s": 1.0}}, "n_train": 500,
                 "n_validation": 50, "n_test": {c: len(y) for c in CONDS},
                 "conditions": {c: conditions[c]["description"] for c in CONDS}, "class_labels": LABELS},
        "headline": {"networks": nets_head, "pca_knn": accuracy["pca_knn"]["in_domain"]["mean"],
                     "com": accuracy["com"]["in_domain"]["mean"], "friedel": None,
                     "worst_shift": {"condition": "descan_2px", "accuracy": 0.3}},
        "accuracy": accuracy,
        "gap": {"method": "mmd", "accuracy_drop_mean_networks": {"descan_2px": 0.1},
                "scores": {"input_pca": {"in_domain": 0.1, "descan_2px": 0.5},
                           "cnn": {"in_domain": 0.2, "descan_2px": 0.7}},
                "rank_agreement": {"input_pca": None, "cnn": {"error": "constant input"}}},
        "periodic": periodic, "defects": {"wall_180": scene},
        "training": {f"{NETS[0]}/seed0": hist, f"{NETS[0]}/seed1": hist, f"{NETS[1]}/seed0": hist[:2]},
        "inference_patterns_per_s": {k: 1e4 for k in NETS},
        "timings_s": {"simulate_s": 1.0, "train_evaluate_s": 2.0, "defects_s": 0.5, "total_s": 4.0},
    }
    return metrics, evaluation


SECTIONS = ["Headline", "Accuracy per test condition", "Confusion matrices (in-domain)", "Class maps (in-domain scans)",
            "Periodic misclassification", "Example patterns and their CoM", "Domain gap vs accuracy drop",
            "Training and timings", "Parameters"]


@pytest.mark.parametrize("with_defects", [True, False])
def test_report(tmp_path, with_defects):
    import matplotlib.pyplot as plt

    metrics, evaluation = _inputs(np.random.default_rng(0))
    if not with_defects:
        metrics = {**copy.deepcopy(metrics), "defects": None}
    write_report(_Recipe(), metrics, evaluation, tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    assert ("<h2>Defect detection</h2>" in html) is with_defects
    # heat map, confusions, class maps, folded errors, examples, gap, training (+ one ROC per scene + scene maps)
    assert html.count("<img") == (9 if with_defects else 7)
    assert "Spearman" in html and "knn_synthetic" in html
    assert "cnn/prototype/filtered" in html and "PCA + kNN" in html
    assert plt.get_fignums() == []
