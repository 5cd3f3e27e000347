"""One line for every bad input (issue 10): a table of malformed inputs over every CLI command.

Every case must end with exit status 2 and exactly one non-empty stderr line that starts with
``error:`` (no traceback, no progress bar or warning before it, nothing on stdout), and must leave
the disk as it found it: the case's tmp directory (also the working directory of the run) and the
shared assets are snapshotted before and after (every path with its kind, size and mtime, files
also with a content hash) and must be identical. Directory mtimes are not compared: the write
probe of :func:`inverscope.core.io.check_output_path` creates and removes a file, which leaves the
entry list (compared exactly) unchanged. Not even a hidden ``.NAME.lock`` beside an output (see
:func:`inverscope.core.io.exclusive_lock`) may remain: every check runs before a lock is taken.

Cases run in-process (``inverscope.cli.main(argv)`` under ``capfd``, cheap); the ones marked
``SUB`` also run through a real ``python -m inverscope.cli`` subprocess to prove the console path.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import resource
import signal
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from tests.studies.test_recognition_imaging_study import SMALL as SMALL_RECOGNITION
from tests.test_cli import SMALL as SMALL_SIMULATION

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
IS_ROOT = os.geteuid() == 0
CASE_TIMEOUT_S = 60          # wall clock per case; the resource guard must refuse at once
MEMORY_HEADROOM = 6 * 2**30  # address space a case may add on top of the test process (guard failures -> MemoryError)

# --------------------------------------------------------------------------- inputs
SIM = SMALL_SIMULATION  # the small SrTiO3 job of tests/test_cli.py

CAMPAIGN = {
    "num_samples": 18, "seed": 1,
    "structure": {"depth_cells": 8, "n_sto": 2, "n_lao": 2},
    "microscope": {"sampling_angstrom": 0.1, "phonon_configs": 2, "semiangle_mrad": 15, "detector_shape": [9, 9]},
    "lines": {"num_positions": 6},
    "thicknesses_cells": [6, 8],
}

LAO = {
    "study": "lao_sto", "name": "tiny", "campaign": CAMPAIGN, "dask": {"n_workers": 0},
    "split": {"validation": 0.25, "test": 0.25},
    "classification": {"net": {"channels": [4], "hidden": 8},
                       "train": {"max_epochs": 3, "optimizer": "adam", "lr": 0.001, "progress_bar": False}},
    "regression": {"net": {"channels": [4], "hidden": 8},
                   "train": {"max_epochs": 3, "optimizer": "adam", "lr": 0.001, "progress_bar": False}},
    "evaluation": {"saliency_examples": 2},
}

PFM = {"study": "pfm_switching", "name": "tiny",
       "model": {"architecture": "sparse_conv_ae", "config": {"channels": [8, 16], "hidden": 32}},
       "train": {"max_epochs": 3, "progress_bar": False, "batch_size": 128},
       "published_architecture_minutes": 0, "pca_components": 8}

ISING = {"study": "ising_recognition", "name": "tiny",
         "loops": {"num_loops": 600, "chunk": 200, "j0_range": [0, 0.5],
                   "ising": {"lattice": [16, 16], "field_max": 2.0, "field_steps": 100, "realizations": 4}},
         "alignment": {"field_at_vmax": 2.0},
         "mlp": {"n_components": 8, "hidden": [32], "train": {"max_epochs": 40}},
         "cnn": {"kind": "cnn", "cnn": {"channels": [8, 16], "hidden": 16}, "train": {"max_epochs": 2}},
         "throughput_loops": 32}

RECOG = SMALL_RECOGNITION  # the small recipe of tests/studies/test_recognition_imaging_study.py

P, K = 4, 9  # the tiny model's positions per stack and pattern size
#: the resource guard's refusal names the memory or disk a job would need
RESOURCE = re.compile(r"needs (about|up to) [\d.]+ [KMGTP]?i?B of (memory|disk)")


def patched(base: dict, path: str, value) -> dict:
    """A deep copy of `base` with the dotted `path` set to `value` (created where missing)."""
    out = json.loads(json.dumps(base))
    *head, last = path.split(".")
    node = out
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def write_yaml(tmp: Path, data, name: str = "cfg.yaml") -> Path:
    p = tmp / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def readonly_out(tmp: Path) -> Path:
    """An --out this process cannot write: a chmod 0o555 directory, or under /proc as root."""
    if IS_ROOT:  # root ignores permission bits; /proc refuses new files even to root
        return Path("/proc/inverscope-malformed-input-test/out")
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "out"


def file_out(tmp: Path) -> Path:
    p = tmp / "taken.txt"
    p.write_text("not a directory")
    return p


def under_file_out(tmp: Path) -> Path:
    p = tmp / "plain_file"
    p.write_text("a file, not a directory")
    return p / "out"


def other_campaign_store(path: Path) -> Path:
    """A campaign store of another config (seed 2), with one sample flagged done so it is not discarded."""
    from inverscope.core.config import validate
    from inverscope.datasets.campaign import CampaignConfig, open_campaign_store

    g = open_campaign_store(path, validate(CampaignConfig, {**CAMPAIGN, "seed": 2}))
    g["done"][0] = True
    return path


# --------------------------------------------------------------------------- shared assets
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A tiny trained-format model and a small 4D-STEM store, shared by the predict cases."""
    import torch

    from inverscope.datasets.store import ZarrCBEDWriter
    from inverscope.models.io import save_model
    from inverscope.models.nets import ShallowMLP, ShallowMLPConfig, StackCNN3D, StackCNN3DConfig

    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(P, K, K), channels=[2], hidden=4, num_outputs=2))
    rng = np.random.default_rng(0)
    save_model(d / "model" / "net", net, "stack_cnn3d",
               {"task": "classification", "class_names": ["LAO", "STO"],
                "normalization": {"mean": rng.uniform(0, 1, (K, K)).tolist(), "std": rng.uniform(0.5, 2, (K, K)).tolist()},
                "input": {"positions": P, "pattern_shape": [K, K], "sampling_mrad": [2.5, 2.5]}})
    mlp = ShallowMLP(ShallowMLPConfig(inputs=8, outputs=3))  # a model of another study (loop parameters)
    save_model(d / "mlp" / "net", mlp, "shallow_mlp", {"task": "regression", "names": ["J0", "dJ", "dh"]})
    data = rng.gamma(2.0, 1.0, (6, 10, K, K)).astype(np.float32)
    w = ZarrCBEDWriter(d / "scan.zarr", (6, 10), (1, K, K), {"calibration": {"sampling_mrad": [2.5, 2.5]}})
    w(0, 60, data.reshape(60, 1, K, K))
    w.close()
    big = rng.gamma(2.0, 1.0, (2, 6, 11, 11)).astype(np.float32)  # patterns the model does not take
    w = ZarrCBEDWriter(d / "big.zarr", (2, 6), (1, 11, 11), {"calibration": {"sampling_mrad": [2.5, 2.5]}})
    w(0, 12, big.reshape(12, 1, 11, 11))
    w.close()
    return d


def zarr_group_with_cbed_subgroup(path: Path) -> Path:
    import zarr

    zarr.open_group(str(path), mode="w").create_group("cbed")
    return path


def model_copy(tmp: Path, assets: Path, weights: bytes | None = None, meta: dict | str | None = None,
               drop: str | None = None) -> Path:
    """A copy of the asset model in `tmp`, with replaced weights bytes / metadata, or a file dropped."""
    src = assets / "model" / "net"
    dst = tmp / "m" / "net"
    dst.parent.mkdir()
    w = src.with_suffix(".safetensors").read_bytes() if weights is None else weights
    m = src.with_suffix(".json").read_text() if meta is None else (meta if isinstance(meta, str) else json.dumps(meta))
    if drop != "safetensors":
        dst.with_suffix(".safetensors").write_bytes(w)
    if drop != "json":
        dst.with_suffix(".json").write_text(m)
    return dst


def asset_meta(assets: Path, **changes) -> dict:
    meta = json.loads((assets / "model" / "net.json").read_text())
    meta.update(changes)
    return meta


# --------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    argv: Callable[[Path, Path], list]         # (tmp, assets) -> arguments after `inverscope`
    needles: tuple = ()                       # substrings (or regexes) the error line must contain
    sub: bool = False                         # also run through a real subprocess
    marks: tuple = field(default_factory=tuple)


SUB = True
C: list[Case] = []


def case(id, argv, *needles, sub=False, marks=()):
    C.append(Case(id, argv, tuple(needles), sub, tuple(marks)))


def sim(tmp, data, *extra, out=None):
    return ["simulate", write_yaml(tmp, data), "--out", out or tmp / "out", "--quiet", *extra]


def run(tmp, recipe, *extra, out=None):
    return ["run", write_yaml(tmp, recipe, "recipe.yaml"), "--out", out or tmp / "out", "--quiet", *extra]


def camp(tmp, cfg, *extra, out=None):
    return ["campaign", write_yaml(tmp, cfg, "campaign.yaml"), "--out", out or tmp / "camp.zarr", "--quiet", *extra]


def pred(tmp, assets, *extra, model=None, data=None, out=None):
    return ["predict", model or assets / "model" / "net", data or assets / "scan.zarr", "--out", out or tmp / "pred",
            *extra]


def npy(tmp, shape, name="data.npy"):
    p = tmp / name
    np.save(p, np.zeros(shape, np.float32))
    return p


def loops_npz(tmp, *, ramp=False, complex_values=False, zeros=False, name="loops.npz"):
    """A small BEPS file: a closed 0 -> +5 -> -5 -> 0 waveform unless `ramp`."""
    v = np.linspace(-5, 5, 32) if ramp else 5 * np.sin(np.linspace(0, 2 * np.pi, 32, endpoint=False))
    loops = np.tanh(v + np.where(np.gradient(v) > 0, -1, 1))[None, None] * np.ones((6, 6, 1))
    loops = loops + 0.01 * np.random.default_rng(0).standard_normal(loops.shape)
    if zeros:
        loops = np.zeros_like(loops)
    if complex_values:
        loops = loops * np.exp(0.3j)
    p = tmp / name
    np.savez(p, loops=loops, voltage=v)
    return p


def text_file(tmp, name="notes.txt", text="these are not loops\n1 2 3\n"):
    p = tmp / name
    p.write_text(text)
    return p


GARBAGE = bytes(range(256)) * 3 + b"\x00\xff\xfe\x80"  # binary, invalid UTF-8

# ---- usage errors (typer/click)
case("usage-unknown-command", lambda t, a: ["frobnicate"], "frobnicate", sub=SUB)
case("usage-unknown-option", lambda t, a: sim(t, SIM, "--bogus-flag"), "--bogus-flag")
case("usage-missing-argument", lambda t, a: ["simulate", "--out", t / "out"], "Missing argument", "config")
case("usage-missing-out", lambda t, a: ["simulate", write_yaml(t, SIM)], "--out")
case("usage-inspect-no-store", lambda t, a: ["inspect"], "Missing argument", "store")
case("usage-predict-one-argument", lambda t, a: ["predict", a / "model" / "net", "--out", t / "p"], "Missing argument",
     "data")
case("usage-mc-dropout-negative", lambda t, a: pred(t, a, "--mc-dropout", "-1"), "--mc-dropout")
case("usage-stride-zero", lambda t, a: pred(t, a, "--stride", "0"), "--stride")
case("usage-bin-zero", lambda t, a: pred(t, a, "--bin", "0"), "--bin")
case("usage-chunk-rows-zero", lambda t, a: pred(t, a, "--chunk-rows", "0"), "--chunk-rows")
case("usage-axis-not-int", lambda t, a: pred(t, a, "--axis", "x"), "--axis")
case("usage-run-workers-negative", lambda t, a: run(t, LAO, "--workers", "-1"), "--workers")
case("usage-run-num-nodes-zero", lambda t, a: run(t, LAO, "--num-nodes", "0"), "--num-nodes")
case("usage-run-devices-no-value", lambda t, a: ["run", write_yaml(t, LAO), "--out", t / "o", "--devices"], "--devices")
case("usage-campaign-workers-negative", lambda t, a: camp(t, CAMPAIGN, "--workers", "-1"), "--workers")
case("usage-demo-unknown-option", lambda t, a: ["demo", "--out", t / "d", "--fast"], "--fast")

# ---- simulate: files that are not configs
case("simulate-not-yaml", lambda t, a: sim(t, "structure: [unclosed\n  : : :\n"), "not valid YAML", sub=SUB)
case("simulate-not-a-mapping", lambda t, a: sim(t, "- 1\n- 2\n"), "mapping")
case("simulate-scalar", lambda t, a: sim(t, "42\n"), "mapping")
case("simulate-empty-file", lambda t, a: sim(t, ""), "mapping")
case("simulate-directory", lambda t, a: (t / "dir.yaml").mkdir() or ["simulate", t / "dir.yaml", "--out", t / "o"],
     "dir.yaml", "is a directory")
case("simulate-binary-garbage", lambda t, a: (t / "g.yaml").write_bytes(GARBAGE) and ["simulate", t / "g.yaml", "--out", t / "o"],
     "g.yaml")
case("simulate-missing-file", lambda t, a: ["simulate", t / "missing.yaml", "--out", t / "o"], "missing.yaml")
case("simulate-markup-in-path", lambda t, a: ["simulate", t / "[/red]bad[bold].yaml", "--out", t / "o"],
     "[/red]bad[bold].yaml")
# unknown keys at each level
case("simulate-unknown-top-key", lambda t, a: sim(t, {**SIM, "bogus": 1}), "bogus")
case("simulate-unknown-structure-key", lambda t, a: sim(t, patched(SIM, "structure.wobble", 3)), "structure.wobble")
case("simulate-unknown-compute-key", lambda t, a: sim(t, patched(SIM, "compute.turbo", True)), "compute.turbo")
case("simulate-unknown-aberration", lambda t, a: sim(t, patched(SIM, "probe.aberrations", {"C99": 1.0})), "C99")
# wrong types
case("simulate-string-for-number", lambda t, a: sim(t, patched(SIM, "structure.thickness_angstrom", "thick")),
     "structure.thickness_angstrom")
case("simulate-list-for-mapping", lambda t, a: sim(t, {**SIM, "grid": [1, 2]}), "grid")
case("simulate-mapping-for-list", lambda t, a: sim(t, {**SIM, "thicknesses_angstrom": {"a": 1}}), "thicknesses_angstrom")
case("simulate-bool-for-compound", lambda t, a: sim(t, patched(SIM, "structure.compound", True)), "structure.compound")
# negative, zero, inf, nan
case("simulate-negative-thickness", lambda t, a: sim(t, patched(SIM, "structure.thickness_angstrom", -5)),
     "structure.thickness_angstrom")
case("simulate-zero-semiangle", lambda t, a: sim(t, patched(SIM, "probe.semiangle_mrad", 0)), "probe.semiangle_mrad")
case("simulate-inf-energy", lambda t, a: sim(t, yaml.safe_dump(SIM).replace("energy_kev: 200", "energy_kev: .inf")),
     "probe.energy_kev")
case("simulate-nan-sampling", lambda t, a: sim(t, yaml.safe_dump({**SIM, "grid": {"sampling_angstrom": 0.05}})
                                               .replace("sampling_angstrom: 0.05", "sampling_angstrom: .nan")),
     "grid.sampling_angstrom")
case("simulate-negative-phonons", lambda t, a: sim(t, patched(SIM, "phonons.num_configs", -1)), "phonons.num_configs")
case("simulate-zero-repeat", lambda t, a: sim(t, patched(SIM, "structure.repeat_xy", 0)), "structure.repeat_xy")
# absurd sizes: refused by the resource guard, naming the memory
case("simulate-absurd-thickness", lambda t, a: sim(t, patched(SIM, "structure.thickness_angstrom", 1e9)), "memory",
     sub=SUB)
case("simulate-absurd-sampling", lambda t, a: sim(t, {**SIM, "grid": {"sampling_angstrom": 1e-6}}), RESOURCE)
case("simulate-absurd-repeat", lambda t, a: sim(t, patched(SIM, "structure.repeat_xy", 100000)), RESOURCE)
case("simulate-absurd-gpts", lambda t, a: sim(t, yaml.safe_dump(SIM).replace("gpts: 64", "gpts: 1.0e+6")), RESOURCE)
case("simulate-absurd-scan", lambda t, a: sim(t, patched(SIM, "scan.gpts", [1000000, 1000000])), RESOURCE)
# structures
case("simulate-structure-file-missing",
     lambda t, a: sim(t, {**SIM, "structure": {"builder": "file", "file": str(t / "nope.cif")}}), "structure.file")
case("simulate-structure-file-unreadable",
     lambda t, a: (t / "junk.cif").write_bytes(GARBAGE) and sim(t, {**SIM, "structure": {"builder": "file",
                                                                                        "file": str(t / "junk.cif")}}),
     "structure.file")
case("simulate-structure-file-unknown-format",
     lambda t, a: text_file(t, "atoms.qqq") and sim(t, {**SIM, "structure": {"builder": "file", "file": str(t / "atoms.qqq")}}),
     "structure.file")
case("simulate-structure-file-missing-key", lambda t, a: sim(t, {**SIM, "structure": {"builder": "file"}}),
     "structure")
# physics conflicts
case("simulate-thickness-outside-specimen", lambda t, a: sim(t, {**SIM, "thicknesses_angstrom": [500.0]}),
     "thicknesses_angstrom")
case("simulate-negative-exit-thickness", lambda t, a: sim(t, {**SIM, "thicknesses_angstrom": [-1.0]}),
     "thicknesses_angstrom")
case("simulate-probe-sampling-conflict", lambda t, a: sim(t, {**SIM, "grid": {"sampling_angstrom": 0.4}}),
     "sampling_angstrom")
case("simulate-detector-beyond-grid", lambda t, a: sim(t, patched(SIM, "detector.max_angle_mrad", 900)),
     "max_angle_mrad")
case("simulate-scan-outside-cell",
     lambda t, a: sim(t, {**SIM, "scan": {"kind": "list", "positions_angstrom": [[1.0, 1.0], [50.0, 2.0]]}}),
     "outside the cell")
case("simulate-empty-scan", lambda t, a: sim(t, {**SIM, "scan": {"kind": "list", "positions_angstrom": []}}),
     "no probe positions")
case("simulate-unknown-device", lambda t, a: sim(t, patched(SIM, "compute.device", "banana")), "banana")
# outputs
case("simulate-out-is-file", lambda t, a: sim(t, SIM, out=file_out(t)), "taken.txt")
case("simulate-out-readonly", lambda t, a: sim(t, SIM, out=readonly_out(t)), "out")
case("simulate-out-parent-is-file", lambda t, a: sim(t, SIM, out=under_file_out(t)), "plain_file")
case("simulate-bad-physics-existing-out", lambda t, a: (t / "old").mkdir() or (t / "old" / "keep.txt").write_text("mine")
     and sim(t, {**SIM, "thicknesses_angstrom": [500.0]}, out=t / "old"), "thicknesses_angstrom")

# ---- demo
case("demo-out-is-file", lambda t, a: ["demo", "--out", file_out(t), "--quiet"], "taken.txt")
case("demo-out-readonly", lambda t, a: ["demo", "--out", readonly_out(t), "--quiet"], "out")
case("demo-out-parent-is-file", lambda t, a: ["demo", "--out", under_file_out(t), "--quiet"], "plain_file")

# ---- inspect
case("inspect-missing", lambda t, a: ["inspect", t / "nothing.zarr"], "nothing.zarr")
case("inspect-text-file", lambda t, a: ["inspect", text_file(t)], "notes.txt")
case("inspect-empty-dir", lambda t, a: (t / "empty.zarr").mkdir() or ["inspect", t / "empty.zarr"], "empty.zarr")
case("inspect-broken-zarr-json", lambda t, a: (t / "b.zarr").mkdir() or (t / "b.zarr" / "zarr.json").write_text("{not json")
     and ["inspect", t / "b.zarr"], "b.zarr")
case("inspect-campaign-store", lambda t, a: ["inspect", other_campaign_store(t / "c.zarr")], "c.zarr")
case("inspect-npy", lambda t, a: ["inspect", npy(t, (3, 3))], "data.npy")
case("inspect-cbed-is-a-group", lambda t, a: zarr_group_with_cbed_subgroup(t / "g.zarr") and ["inspect", t / "g.zarr"],
     "g.zarr")

# ---- run: recipe files and study names
case("run-missing-recipe", lambda t, a: ["run", t / "missing.yaml", "--out", t / "o"], "missing.yaml")
case("run-not-yaml", lambda t, a: run(t, "study: [lao_sto\n"), "not valid YAML")
case("run-not-a-mapping", lambda t, a: run(t, "- lao_sto\n"), "mapping")
case("run-empty-recipe", lambda t, a: run(t, ""), "mapping")
case("run-directory", lambda t, a: (t / "r.yaml").mkdir() or ["run", t / "r.yaml", "--out", t / "o"], "r.yaml",
     "is a directory")
case("run-binary-garbage", lambda t, a: (t / "g.yaml").write_bytes(GARBAGE) and ["run", t / "g.yaml", "--out", t / "o"],
     "g.yaml")
case("run-unknown-study", lambda t, a: run(t, {**LAO, "study": "alchemy"}), "study", "alchemy", sub=SUB)
case("run-study-not-a-string", lambda t, a: run(t, {**LAO, "study": ["lao_sto"]}), "study")

# ---- run lao_sto
case("lao-unknown-top-key", lambda t, a: run(t, {**LAO, "splitt": {}}), "splitt")
case("lao-unknown-nested-key", lambda t, a: run(t, patched(LAO, "campaign.microscope.wobble", 1)),
     "campaign.microscope.wobble")
case("lao-string-for-number", lambda t, a: run(t, patched(LAO, "campaign.num_samples", "many")), "campaign.num_samples")
case("lao-list-for-mapping", lambda t, a: run(t, {**LAO, "split": [0.2, 0.2]}), "split")
case("lao-zero-samples", lambda t, a: run(t, patched(LAO, "campaign.num_samples", 0)), "campaign.num_samples")
case("lao-negative-lr", lambda t, a: run(t, patched(LAO, "classification.train.lr", -1.0)), "classification.train.lr")
case("lao-inf-energy", lambda t, a: run(t, yaml.safe_dump(patched(LAO, "campaign.microscope.energy_ev", 200000.0))
                                        .replace("energy_ev: 200000.0", "energy_ev: .inf")), "energy_ev")
case("lao-nan-semiangle", lambda t, a: run(t, yaml.safe_dump(LAO).replace("semiangle_mrad: 15", "semiangle_mrad: .nan")),
     "semiangle_mrad")
case("lao-split-over-one", lambda t, a: run(t, patched(LAO, "split.validation", 1.5)), "split.validation")
case("lao-thickness-outside-specimen", lambda t, a: run(t, patched(LAO, "campaign.thicknesses_cells", [6, 80])),
     "thicknesses_cells")
case("lao-absurd-samples", lambda t, a: run(t, patched(LAO, "campaign.num_samples", 10000000000)), RESOURCE)
case("lao-absurd-sampling", lambda t, a: run(t, patched(LAO, "campaign.microscope.sampling_angstrom", 1e-6)), RESOURCE)
case("lao-data-not-allowed", lambda t, a: run(t, LAO, "--data", npy(t, (4, 4, 30))), "--data")
case("lao-scheduler-garbage", lambda t, a: run(t, LAO, "--scheduler", "not a url at all"), "--scheduler")
case("lao-out-is-file", lambda t, a: run(t, LAO, out=file_out(t)), "taken.txt")
case("lao-out-readonly", lambda t, a: run(t, LAO, out=readonly_out(t)), "out")
case("lao-out-parent-is-file", lambda t, a: run(t, LAO, out=under_file_out(t)), "plain_file")
case("lao-other-campaign-in-out", lambda t, a: (t / "out").mkdir() or other_campaign_store(t / "out" / "campaign.zarr")
     and run(t, LAO), "another campaign")
case("lao-campaign-store-not-zarr", lambda t, a: (t / "out" / "campaign.zarr").mkdir(parents=True)
     or (t / "out" / "campaign.zarr" / "notes.txt").write_text("mine") and run(t, LAO),
     "campaign.zarr", "not a Zarr store")

# ---- run pfm_switching
case("pfm-unknown-key", lambda t, a: run(t, {**PFM, "epochs": 3}), "epochs")
case("pfm-unknown-nested-key", lambda t, a: run(t, patched(PFM, "data.path", "x")), "data.path")
case("pfm-string-for-number", lambda t, a: run(t, {**PFM, "train_fraction": "most"}), "train_fraction")
case("pfm-fraction-over-one", lambda t, a: run(t, {**PFM, "train_fraction": 1.5}), "train_fraction")
case("pfm-unknown-architecture", lambda t, a: run(t, patched(PFM, "model.architecture", "gan")), "model.architecture")
case("pfm-unknown-net-key", lambda t, a: run(t, patched(PFM, "model.config.wobble", 1)), "wobble")
case("pfm-data-missing", lambda t, a: run(t, PFM, "--data", t / "nope.h5"), "nope.h5")
case("pfm-data-not-beps", lambda t, a: run(t, PFM, "--data", text_file(t)), "notes.txt")
case("pfm-data-garbage-h5", lambda t, a: (t / "g.h5").write_bytes(GARBAGE) and run(t, PFM, "--data", t / "g.h5"), "g.h5")
case("pfm-data-2d-npy", lambda t, a: run(t, PFM, "--data", npy(t, (30, 30))), "data.npy")
case("pfm-voltage-is-a-ramp", lambda t, a: run(t, PFM, "--data", loops_npz(t, ramp=True)), "never turns around")
case("pfm-complex-without-component", lambda t, a: run(t, PFM, "--data", loops_npz(t, complex_values=True)),
     "component")
case("pfm-unknown-component", lambda t, a: run(t, patched(PFM, "data.component", "modulus"), "--data",
                                                loops_npz(t, complex_values=True)), "data.component")
case("pfm-loops-all-outliers", lambda t, a: run(t, PFM, "--data", loops_npz(t, zeros=True)), "outlier")
case("pfm-out-is-file", lambda t, a: run(t, PFM, out=file_out(t)), "taken.txt")
case("pfm-out-readonly", lambda t, a: run(t, PFM, out=readonly_out(t)), "out")
case("pfm-bad-data-existing-out", lambda t, a: (t / "old").mkdir() or (t / "old" / "metrics.json").write_text("{}")
     and run(t, PFM, "--data", npy(t, (30,)), out=t / "old"), "data.npy")

# ---- run ising_recognition
case("ising-unknown-key", lambda t, a: run(t, patched(ISING, "loops.ising.temperature", 1.0)), "loops.ising.temperature")
case("ising-zero-field-steps", lambda t, a: run(t, patched(ISING, "loops.ising.field_steps", 0)), "field_steps")
case("ising-negative-lattice", lambda t, a: run(t, patched(ISING, "loops.ising.lattice", [-4, 16])), "lattice")
case("ising-nan-field-max", lambda t, a: run(t, yaml.safe_dump(ISING).replace("field_max: 2.0", "field_max: .nan")),
     "field_max")
case("ising-field-beyond-sweep", lambda t, a: run(t, patched(ISING, "alignment.field_at_vmax", 3.0)),
     "alignment.field_at_vmax")
case("ising-absurd-loops", lambda t, a: run(t, patched(ISING, "loops.num_loops", 10000000000)), RESOURCE)
case("ising-data-missing", lambda t, a: run(t, ISING, "--data", t / "nope.mat"), "nope.mat")
case("ising-data-not-beps", lambda t, a: run(t, ISING, "--data", text_file(t)), "notes.txt")
case("ising-data-2d-npy", lambda t, a: run(t, ISING, "--data", npy(t, (30, 30))), "data.npy")
case("ising-voltage-is-a-ramp", lambda t, a: run(t, ISING, "--data", loops_npz(t, ramp=True)), "never turns around")
case("ising-complex-without-component", lambda t, a: run(t, ISING, "--data", loops_npz(t, complex_values=True)),
     "component")
case("ising-out-is-file", lambda t, a: run(t, ISING, out=file_out(t)), "taken.txt")

# ---- run recognition_imaging
case("recog-unknown-key", lambda t, a: run(t, patched(RECOG, "synthetic.scan.colour", "red")), "synthetic.scan.colour")
case("recog-too-many-components", lambda t, a: run(t, patched(RECOG, "synthetic.pca_components", 500)),
     "synthetic.pca_components")
case("recog-unknown-layer", lambda t, a: run(t, patched(RECOG, "synthetic.scan.layers", ["STO", "XYZ"])), "XYZ")
case("recog-absurd-scan", lambda t, a: run(t, patched(RECOG, "synthetic.scan",
                                                        {"rows": 100000, "positions": 100000, "channels": 100000})),
     RESOURCE)
case("recog-data-missing", lambda t, a: run(t, RECOG, "--data", t / "nope.npz"), "nope.npz")
case("recog-data-not-beps", lambda t, a: run(t, RECOG, "--data", text_file(t)), "notes.txt")
case("recog-data-2d-npy", lambda t, a: run(t, RECOG, "--data", npy(t, (30, 30))), "data.npy")
case("recog-out-is-file", lambda t, a: run(t, RECOG, out=file_out(t)), "taken.txt")

# ---- campaign
case("campaign-not-yaml", lambda t, a: camp(t, "num_samples: [\n"), "not valid YAML")
case("campaign-unknown-key", lambda t, a: camp(t, {**CAMPAIGN, "speed": "fast"}), "speed")
case("campaign-zero-samples", lambda t, a: camp(t, {**CAMPAIGN, "num_samples": 0}), "num_samples")
case("campaign-absurd-samples", lambda t, a: camp(t, {**CAMPAIGN, "num_samples": 10000000000}), RESOURCE, sub=SUB)
case("campaign-absurd-sampling", lambda t, a: camp(t, patched(CAMPAIGN, "microscope.sampling_angstrom", 1e-6)), RESOURCE)
case("campaign-thickness-outside", lambda t, a: camp(t, {**CAMPAIGN, "thicknesses_cells": [0]}), "thicknesses_cells")
case("campaign-scheduler-garbage", lambda t, a: camp(t, CAMPAIGN, "--scheduler", "not a url at all"), "--scheduler")
case("campaign-out-is-file", lambda t, a: camp(t, CAMPAIGN, out=file_out(t)), "taken.txt")
case("campaign-out-readonly", lambda t, a: camp(t, CAMPAIGN, out=readonly_out(t)), "out")
case("campaign-out-parent-is-file", lambda t, a: camp(t, CAMPAIGN, out=under_file_out(t)), "plain_file")
# refused before the store's lock is taken (datasets/campaign.check_campaign_store)
case("campaign-store-of-another-config", lambda t, a: camp(t, CAMPAIGN, out=other_campaign_store(t / "c.zarr")),
     "another campaign")
case("campaign-out-is-plain-dir", lambda t, a: (t / "plain").mkdir() or (t / "plain" / "x.txt").write_text("x")
     and camp(t, CAMPAIGN, out=t / "plain"), "plain", "not a Zarr store")
case("campaign-from-recipe-bad-section", lambda t, a: camp(t, {**LAO, "campaign": [1, 2]}), "mapping")

# ---- predict: models that are not models
case("predict-random-bytes-weights", lambda t, a: pred(t, a, model=model_copy(t, a, weights=os.urandom(512))),
     "net.safetensors", sub=SUB)
case("predict-pickle-weights", lambda t, a: pred(t, a, model=model_copy(t, a, weights=pickle.dumps({"w": [1.0, 2.0]}))),
     "net.safetensors")
case("predict-json-without-weights", lambda t, a: pred(t, a, model=model_copy(t, a, drop="safetensors")),
     "net.safetensors")
case("predict-missing-json-sidecar", lambda t, a: pred(t, a, model=model_copy(t, a, drop="json")), "net.json")
case("predict-json-not-json", lambda t, a: pred(t, a, model=model_copy(t, a, meta="{weights: none")), "net.json")
case("predict-json-a-list", lambda t, a: pred(t, a, model=model_copy(t, a, meta="[1, 2, 3]")), "net.json")
case("predict-json-wrong-format", lambda t, a: pred(t, a, model=model_copy(t, a, meta=asset_meta(a, format="keras/2"))),
     "format")
case("predict-json-unknown-architecture",
     lambda t, a: pred(t, a, model=model_copy(t, a, meta=asset_meta(a, architecture="transformer"))), "transformer")
case("predict-json-bad-net-config",
     lambda t, a: pred(t, a, model=model_copy(t, a, meta=asset_meta(a, config={**asset_meta(a)["config"],
                                                                                 "channels": "many"}))),
     "net.json", "channels")
case("predict-json-without-architecture",
     lambda t, a: pred(t, a, model=model_copy(t, a, meta={k: v for k, v in asset_meta(a).items() if k != "architecture"})),
     "architecture")
case("predict-model-missing", lambda t, a: pred(t, a, model=t / "nomodel"), "nomodel")
case("predict-model-of-another-kind", lambda t, a: pred(t, a, model=a / "mlp" / "net"), "mlp/net", "shallow_mlp",
     "stack_cnn3d")
# data that is not 4D-STEM
case("predict-data-text", lambda t, a: pred(t, a, data=text_file(t)), "notes.txt")
case("predict-data-2d-npy", lambda t, a: pred(t, a, data=npy(t, (K, K))), "data.npy")
case("predict-data-missing", lambda t, a: pred(t, a, data=t / "none.zarr"), "none.zarr")
case("predict-data-empty-zarr-dir", lambda t, a: (t / "e.zarr").mkdir() or pred(t, a, data=t / "e.zarr"), "e.zarr")
case("predict-data-garbage-hspy", lambda t, a: (t / "g.hspy").write_bytes(GARBAGE) and pred(t, a, data=t / "g.hspy"),
     "g.hspy")
case("predict-data-wrong-pattern-size", lambda t, a: pred(t, a, data=a / "big.zarr"), "(4, 9, 9)")
case("predict-thickness-index-out-of-range", lambda t, a: pred(t, a, "--thickness-index", "5"), "thickness_index")
case("predict-axis-out-of-range", lambda t, a: pred(t, a, "--axis", "7"), "axis: got 7")
case("predict-device-garbage", lambda t, a: pred(t, a, "--device", "banana"), "banana")
# outputs
case("predict-out-is-file", lambda t, a: pred(t, a, out=file_out(t)), "taken.txt")
case("predict-out-not-empty", lambda t, a: (t / "full").mkdir() or (t / "full" / "keep.txt").write_text("mine")
     and pred(t, a, out=t / "full"), "not empty")
case("predict-out-readonly", lambda t, a: pred(t, a, out=readonly_out(t)), "out")
case("predict-out-parent-is-file", lambda t, a: pred(t, a, out=under_file_out(t)), "plain_file")


# --------------------------------------------------------------------------- checks
def snapshot(*roots: Path) -> dict:
    """Every path under `roots`: kind and, for files and links, size, mtime and content hash."""
    snap = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [None, *dirnames, *filenames]:
                p = Path(dirpath) if name is None else Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISDIR(st.st_mode):
                    snap[str(p)] = ("dir", stat.S_IMODE(st.st_mode))
                elif stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    snap[str(p)] = ("file", st.st_size, st.st_mtime_ns, digest)
                else:
                    snap[str(p)] = ("other", st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def assert_disk_unchanged(before: dict, after: dict) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not (added or removed or changed), f"disk changed: added {added}, removed {removed}, changed {changed}"


def assert_one_error_line(code, out: str, err: str, needles) -> str:
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit status {code}; stderr: {err!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert err.strip() == line.strip(), repr(err)          # no stray control characters or blank noise
    assert out.strip() == "", f"stdout should be empty: {out!r}"
    for needle in needles:
        if isinstance(needle, re.Pattern):
            assert needle.search(line), f"{needle.pattern!r} does not match {line!r}"
        else:
            assert needle in line, f"{needle!r} not in {line!r}"
    return line


class CaseTimeout(BaseException):
    """Not an OSError/Exception, so the CLI cannot turn it into an error line."""


def _limit_memory():
    """Cap the address space at what the process uses now plus MEMORY_HEADROOM, for the absurd-size
    cases only (a failed guard then raises MemoryError instead of calling the OOM killer)."""
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, old[1]))
    return old


def _argv(case: Case, tmp: Path, assets: Path) -> list[str]:
    return [str(x) for x in case.argv(tmp, assets)]


def _params(only_sub=False):
    return [pytest.param(c, id=c.id, marks=c.marks) for c in C if c.sub or not only_sub]


def _restore_permissions(tmp: Path):
    for p in [tmp, *tmp.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


@pytest.mark.parametrize("case", _params())
def test_in_process(case: Case, tmp_path, assets, capfd, monkeypatch, caplog):
    from inverscope.cli import main

    tmp = tmp_path / "case"
    tmp.mkdir()
    argv = _argv(case, tmp, assets)
    monkeypatch.chdir(tmp)
    capfd.readouterr()
    before = snapshot(tmp, assets)

    def on_alarm(*_):
        raise CaseTimeout(f"{case.id} ran longer than {CASE_TIMEOUT_S} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_TIMEOUT_S)
    old_limit = _limit_memory() if "absurd" in case.id else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            code = main(argv)
    finally:
        if old_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, old_limit)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
    out, err = capfd.readouterr()
    try:
        assert_one_error_line(code, out, err, case.needles)
        # what a console run would print: warnings Python shows by default, log records a handler would emit
        shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                                                  ImportWarning, ResourceWarning))]
        assert not shown, f"warnings: {[str(w.message) for w in shown]}"
        assert not [r for r in caplog.records if r.levelno >= 30], caplog.text
        assert_disk_unchanged(before, snapshot(tmp, assets))
    finally:
        _restore_permissions(tmp)


@pytest.mark.parametrize("case", _params(only_sub=True))
def test_console_subprocess(case: Case, tmp_path, assets):
    tmp = tmp_path / "case"
    tmp.mkdir()
    argv = _argv(case, tmp, assets)
    before = snapshot(tmp, assets)

    cmd = [sys.executable, "-m", "inverscope.cli", *argv]
    if "absurd" in case.id:  # a failed guard ends in MemoryError, not in the OOM killer
        cmd = ["bash", "-c", f'ulimit -v {8 * 2**20} && exec "$@"', "inverscope", *cmd]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("INVERSCOPE_DEBUG", None)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=120)
    try:
        assert_one_error_line(r.returncode, r.stdout, r.stderr, case.needles)
        assert_disk_unchanged(before, snapshot(tmp, assets))
    finally:
        _restore_permissions(tmp)


def test_the_table_is_large_and_covers_every_command():
    commands = {}
    for c in C:
        commands.setdefault(c.id.split("-")[0], []).append(c)
    assert len(C) >= 70
    for prefix in ("usage", "simulate", "demo", "inspect", "run", "lao", "pfm", "ising", "recog", "campaign", "predict"):
        assert commands.get(prefix), prefix
    assert sum(c.sub for c in C) >= 5
    assert len({c.id for c in C}) == len(C)


def test_the_checks_fail_on_what_they_guard(tmp_path, assets, capfd):
    """The assertions above are not vacuous: each one rejects the failure it is there for."""
    from inverscope.cli import main

    code = main(["inspect", str(assets / "scan.zarr")])       # a good command is not an error case
    out, err = capfd.readouterr()
    assert code == 0 and '"shape"' in out
    for bad in [(code, out, err, ()), (1, "", "error: y\n", ()), (2, "", "warning: x\nerror: y\n", ()),
                (2, "", "Traceback (most recent call last):\nerror: y\n", ()), (2, "", "y\n", ()),
                (2, "10%|#\n", "error: y\n", ()), (2, "", "error: y\n", ("z",)), (2, "", "error: y\n", (RESOURCE,))]:
        with pytest.raises(AssertionError):
            assert_one_error_line(*bad)
    assert assert_one_error_line(2, "", "error: needs about 3 GiB of memory\n", ("memory", RESOURCE))

    (tmp_path / "keep.txt").write_text("1")
    before = snapshot(tmp_path)
    assert_disk_unchanged(before, snapshot(tmp_path))
    (tmp_path / ".out.lock").write_text("123")
    with pytest.raises(AssertionError, match="out.lock"):
        assert_disk_unchanged(before, snapshot(tmp_path))
    (tmp_path / ".out.lock").unlink()
    (tmp_path / ".out.partial-x").mkdir()
    with pytest.raises(AssertionError, match="partial"):
        assert_disk_unchanged(before, snapshot(tmp_path))
    (tmp_path / ".out.partial-x").rmdir()
    (tmp_path / "keep.txt").write_text("2")                    # same size, new content
    with pytest.raises(AssertionError, match="keep.txt"):
        assert_disk_unchanged(before, snapshot(tmp_path))
