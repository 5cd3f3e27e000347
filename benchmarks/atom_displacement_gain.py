"""Displacement gain of the atom finder in a simulated movie: do found columns move as far as the true ones?

Re-runs the movie of a trained atom-finding study (``_movie`` of ``inverscope.studies.atom_finding``,
the recipe's movie settings and seed) with the study's saved ensemble, matches found to true
columns frame by frame (Hungarian, within 1.5 px, drift-corrected frame-0 coordinates), and per
class regresses each column's found displacement from its frame-0 position on its true one
(least squares through the origin, x and y pooled). A slope g below 1 means the finder
attenuates motion; the MSD, and so the fitted diffusion constant, then scale by about g^2.

    python benchmarks/atom_displacement_gain.py --recipe recipes/atoms_perovskite.yaml --models out/atoms_perovskite/models
"""
import argparse
import numpy as np, yaml, torch
from scipy.optimize import linear_sum_assignment
torch.set_num_threads(2)
from inverscope.studies.atom_finding import Recipe, _movie
from inverscope.models.io import load_model
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--recipe", default="recipes/atoms_perovskite.yaml")
ap.add_argument("--models", required=True, help="the study's models directory (atoms_0, atoms_1, ...)")
args = ap.parse_args()
rec = Recipe.model_validate(yaml.safe_load(open(args.recipe)))
first, meta = load_model(f"{args.models}/atoms_0")
nets = [first.eval()] + [load_model(f"{args.models}/{name}")[0].eval() for name in meta.get("ensemble", [])
                         if name != "atoms_0"]
classes = list(meta["class_names"])
res = _movie(rec, nets, classes, print)
tracks, truth = res["tracks"], res["true_tracks"]
# per frame: match found atoms to true ones (frame-0 coords, drift-corrected found)
rows = []
for f in sorted(truth["frame"].unique()):
    t = truth[truth["frame"] == f]; p = tracks[tracks["frame"] == f]
    if not len(p): continue
    d = np.hypot(p["x"].to_numpy()[:, None] - t["x"].to_numpy()[None], p["y"].to_numpy()[:, None] - t["y"].to_numpy()[None])
    i, j = linear_sum_assignment(d)
    ok = d[i, j] < 1.5
    for a, b in zip(i[ok], j[ok]):
        rows.append((f, t["particle"].iloc[b], t["class"].iloc[b], p["x"].iloc[a], p["y"].iloc[a], t["x"].iloc[b], t["y"].iloc[b]))
rows = np.array(rows, dtype=float)
p = rec.movie.pixel_size_angstrom
for k, name in enumerate(classes):
    m = rows[:, 2] == k
    if not m.any(): continue
    r = rows[m]
    # displacement of each particle from its frame-0 true position, true vs found (found drift-corrected)
    true_d, found_d = [], []
    for pid in np.unique(r[:, 1]):
        q = r[r[:, 1] == pid]
        q = q[np.argsort(q[:, 0])]
        if len(q) < 5: continue
        true_d.append(q[:, 5:7] - q[0, 5:7]); found_d.append(q[:, 3:5] - q[0, 3:5])
    if not true_d: continue
    td = np.concatenate(true_d).ravel(); fd = np.concatenate(found_d).ravel()
    slope = float(np.sum(td * fd) / np.sum(td * td))
    err = np.hypot(r[:, 3] - r[:, 5], r[:, 4] - r[:, 6]) * p * 100
    print(f"{name}: n={m.sum()}, slope found-vs-true displacement {slope:.2f}, median error {np.median(err):.1f} pm, "
          f"rms true displacement from frame 0 {np.std(td) * p * 100:.1f} pm")
