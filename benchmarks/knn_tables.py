"""Markdown tables of a KNN polarization run for BENCHMARKS.md, and its figures as a results JSON.

    python benchmarks/knn_tables.py out/knn [--json benchmarks/results/knn_quick.json]

Prints the accuracy of every model on every condition (mean over seeds, % ; ± std where there are
several seeds), the gap scores with their rank agreement, the periodic-error figures and the
defect AUROCs, and writes the metrics without the per-position maps and ROC points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def _short(key: str) -> str:
    parts = key.split("/")
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1][:5]}{', filt.' if parts[2] == 'filtered' else ''})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    m = json.loads((a.run / "metrics.json").read_text())
    acc = m["accuracy"]
    models = list(acc)
    conds = list(acc[models[0]])
    print("| condition | " + " | ".join(_short(k) for k in models) + " |")
    print("|---|" + "---|" * len(models))
    for c in conds:
        cells = []
        for k in models:
            s = acc[k][c]
            cells.append(f"{100 * s['mean']:.1f}" + (f" ± {100 * s['std']:.1f}" if s["n_seeds"] > 1 else ""))
        print(f"| {c} | " + " | ".join(cells) + " |")
    g = m["gap"]
    print("\ngap scores (" + g["method"] + "), Spearman rho with the networks' mean drop:",
          {k: (round(v["spearman"], 2) if isinstance(v, dict) and "spearman" in v else v)
           for k, v in g["rank_agreement"].items()})
    p = m["periodic"]
    print("\n| model | error rate | harmonic share (chance) | acc. above mean abs(CoM) | below |")
    print("|---|---|---|---|---|")
    for k, v in p.items():
        if isinstance(v, dict):
            h = "-" if v["harmonic_share"] is None else f"{v['harmonic_share']:.2f} ({v['harmonic_share_chance']:.2f})"
            print(f"| {_short(k)} | {100 * v['error_rate']:.1f} % | {h} "
                  f"| {100 * v['accuracy_above_mean_com']:.1f} % | {100 * v['accuracy_below_mean_com']:.1f} % |")
    if m.get("defects"):
        print("\n| scene | model | clean acc. | AUROC (all defects): disagreement / softmax / pca_error / knn | wall error median [Å] |")
        print("|---|---|---|---|---|")
        for scene, v in m["defects"].items():
            for k, mm in v["models"].items():
                au = mm["auroc"]
                f = [au.get(s, {}).get("all") for s in ("disagreement", "softmax_max", "pca_error", "knn_distance")]
                w = mm.get("wall_errors", {}).get("disagreement", {}).get("wall", {})
                print(f"| {scene} | {_short(k)} | {100 * mm['accuracy_clean']:.1f} % | "
                      + " / ".join("-" if x is None else f"{x:.2f}" for x in f)
                      + f" | {w.get('median_angstrom', float('nan')):.2f} |")
    print("\ntimings [s]:", {k: round(v) for k, v in m["timings_s"].items()})
    print("inference patterns/s:", {k: round(v) for k, v in m["inference_patterns_per_s"].items()})
    if a.json:
        slim = {k: v for k, v in m.items() if k not in ("defects", "training")}
        if m.get("defects"):
            slim["defects"] = {s: {"masks": v["masks"], "models": {k: {kk: vv for kk, vv in mm.items() if kk != "roc"}
                                                                  for k, mm in v["models"].items()}}
                               for s, v in m["defects"].items()}
        slim["machine"] = f"{platform.node()}, {os.cpu_count()} cores"
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(slim, indent=1))


if __name__ == "__main__":
    main()
