"""Benchmark: ``inverscope predict`` throughput for every model kind inverscope ships (issue 15).

    python benchmarks/predict_speed.py                      # every case, about 4-5 min on 2 cores
    python benchmarks/predict_speed.py --model atoms_unet=out/atoms_graphene/models/atoms_0
    python benchmarks/predict_speed.py --only lao_sto_classifier,knn_cnn --repeats 3
    python benchmarks/predict_speed.py --tiny --out /tmp/predict_speed.json      # CPU smoke, ~30 s

Cases, one per shipped model kind, each at its recipe's shape:

==================== ====================================================================
``lao_sto_classifier`` ``stack_cnn3d`` of ``recipes/lao_sto_quick.yaml`` (channels 8/16/16, hidden 64),
                       12-position stacks of 13 x 13 px patterns (3.5 mrad/px), 2 classes; a 96 x 90
                       scan (8640 patterns) in an inverscope Zarr store (:class:`ZarrCBEDWriter`),
                       windows sliding along each scan row (stride 1: 96 x 79 stacks).
``lao_sto_regressor``  the same net with one output (regression, ``--mc-dropout`` 0 as predict's default).
``knn_cnn``            ``recipes/knn_quick.yaml`` models at 32 x 32 px (3.2 mrad/px), 8 classes,
``knn_vgg11``          classification head: the paper's CNN (defaults), VGG-11-BN width 0.25,
``knn_resnet18``       ResNet-18 width 0.25; a 64 x 64 scan (4096 patterns) in a 4D ``.npy``.
``pacbed_cnn``         ``recipes/pacbed_sto.yaml`` (``pattern_cnn`` 12/24/48/48, 48 x 48 px input,
                       +-2 semiangles, 16 MC-dropout passes as predict's default); 64 PACBED frames
                       (256 x 256 px, 0.55 mrad/px, shifted and rotated camera frames made with
                       :func:`~inverscope.datasets.degrade.degrade` from the SrTiO3 patterns of
                       ``tests/data/pacbed``) as an 8 x 8 4D ``.npy`` read with ``--window 1``, so
                       every scan position is one PACBED that is registered and read.
``atoms_unet``         ``recipes/atoms_graphene.yaml`` (U-Net depth 3, 8 base channels, ensemble of
                       3): one 512 x 512 synthetic graphene HAADF image (``.npy``, ``--pixel-size``
                       the model's nominal 0.16 Å/px, so no resampling).
==================== ====================================================================

What a "pattern" is: a diffraction pattern of the scan (stack and KNN cases; a stack case
reads every pattern once but feeds each to the network in up to 12 overlapping stacks); one
PACBED image (``pacbed_cnn``); for ``atoms_unet`` the rate is megapixels of image per second
(Mpx/s), and atoms/s = atoms found / seconds.

Weights are random (seeded), since the network time does not depend on them. The atom
locator's work does (a random U-Net's maps show noise, not atoms), so ``atoms_unet`` takes a
trained ensemble with ``--model atoms_unet=PATH`` (e.g. ``out/atoms_graphene/models/atoms_0``;
its siblings load as in ``predict``); its atoms/s is only meaningful then, and the JSON says
which weights were used. ``--model KIND=PATH`` works for every kind (data are then made for the
model's input shape and sampling).

Protocol per case: the data are written once under ``--work`` (default a temporary directory,
removed at the end) in a format ``predict`` reads; then the whole
:func:`inverscope.analysis.maps.predict_files` call (= ``inverscope predict MODEL DATA --out DIR``
without the progress bar: model loading, reading, preprocessing, network, postprocessing,
figures and outputs) runs into a fresh output directory: one warm-up, then ``--repeats``
(default 5) timed runs. After each predict run the network alone runs on the same inputs as
predict gives it (normalised beforehand, same batch size and chunking, the model as predict's
loader leaves it, ``torch.inference_mode``), interleaved so that a busy spell hits both.
Reported: median [min, max] seconds and patterns/s (= patterns in the data / seconds), the
network-only seconds and their share of predict's median time (the rest is reading, registering,
locating, writing, plotting). The atom case also times the ensemble with autograd enabled, as
``predict`` runs it today. Torch uses ``--threads`` (default 2) threads;
``OMP_WAIT_POLICY=PASSIVE`` is set before torch is imported. The JSON records the machine, date,
software versions, the load average before and after each case, every run, and predict's own
summary timings; it is written atomically to ``benchmarks/results/predict_speed.json`` (``--out``).

``--tiny``: small scans (8 x 20 stacks scan, 8 x 8 KNN scan, 2 x 2 PACBED frames, 128 px atom
image) and 1 repeat, a smoke test of the whole path (``tests/test_predict_speed.py``).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "predict_speed.json"
PACBED_FIXTURE = ROOT / "tests" / "data" / "pacbed" / "srtio3_001_pacbed.npy"
KINDS = ("lao_sto_classifier", "lao_sto_regressor", "knn_cnn", "knn_vgg11", "knn_resnet18", "pacbed_cnn", "atoms_unet")
#: KNN quick recipe: name -> (architecture, config)
KNN = {"knn_cnn": ("polarization_cnn", {}), "knn_vgg11": ("vgg_pattern", {"depth": 11, "width": 0.25}),
       "knn_resnet18": ("resnet_pattern", {"depth": 18, "width": 0.25})}
KNN_VARIANTS = ["[101]", "[110]", "[011]", "[-110]", "[-101]", "[-1-10]", "[0-11]", "[1-10]"]
#: scan sizes: full run and --tiny
SIZES = {"full": {"stack_scan": (96, 90), "knn_scan": (64, 64), "pacbed_grid": (8, 8), "atom_px": 512},
         "tiny": {"stack_scan": (8, 20), "knn_scan": (8, 8), "pacbed_grid": (2, 2), "atom_px": 128}}
STACK_BATCH, STACK_CHUNK_ROWS = 256, 8        # predict_to_dir's batch_size and chunk_rows defaults
KNN_BATCH, KNN_CHUNK_ROWS = 512, 8            # PolarModel.predict's batch_size, predict_polarization's chunk_rows
PACBED_BATCH, PACBED_PASSES = 256, 16         # predict_with_uncertainty's batch_size, predict_pacbed's mc_dropout


@dataclass
class Case:
    """One prepared case: what predict is given, how many patterns that is, and the network-only runs."""

    name: str
    model_path: Path
    data_paths: list[Path]
    options: dict
    count: float                               # patterns (or Mpx) in the data
    unit: str                                  # "patterns", "PACBED images", "Mpx"
    pattern: str                               # what one unit is
    model: dict
    data: dict
    network: Callable[[], float]               # seconds of the network alone on predict's inputs
    network_what: str
    extra_timers: dict = field(default_factory=dict)   # name -> callable (seconds)
    summary_keys: tuple = ()                   # predict summary entries kept per run


# --------------------------------------------------------------------------- helpers

def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _machine(threads: int) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = round(kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import inverscope

    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "memory_gb": mem,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "inverscope": inverscope.__version__, "git_commit": commit, "torch_threads": torch.get_num_threads(),
            "threads_requested": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "device": "cpu"}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _timer(fn: Callable[[], None], grad: bool = False) -> Callable[[], float]:
    def run() -> float:
        with torch.enable_grad() if grad else torch.inference_mode():
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
    return run


def _discs(rng, n: int, side: int, radius_px: float, dose: float, shift_px: float) -> np.ndarray:
    """`n` soft-edged bright-field discs on a faint background, shifted by up to `shift_px`, Poisson counts."""
    yy, xx = (np.mgrid[:side, :side] - side // 2).astype(np.float32)
    ang = rng.integers(0, 8, n) * (np.pi / 4)
    dy, dx = (-np.sin(ang) * shift_px).astype(np.float32), (np.cos(ang) * shift_px).astype(np.float32)
    out = np.empty((n, side, side), np.float32)
    for i0 in range(0, n, 1024):
        i1 = min(n, i0 + 1024)
        r = np.hypot(yy[None] - dy[i0:i1, None, None], xx[None] - dx[i0:i1, None, None])
        img = 1.0 / (1.0 + np.exp((r - radius_px) / 0.6)) + 0.02
        img *= dose / img.sum(axis=(1, 2), keepdims=True)
        out[i0:i1] = rng.poisson(img).astype(np.float32)
    return out


def _model_info(path: Path, trained: bool, seed: int | None) -> dict:
    from inverscope.models.io import load_metadata

    meta = load_metadata(path)
    info = {"path": str(path), "weights": "trained" if trained else f"random (torch seed {seed})",
            "architecture": meta.get("architecture"), "task": meta.get("task"), "config": meta.get("config")}
    if meta.get("ensemble") is not None:
        info["ensemble"] = meta.get("ensemble")
    return info


# --------------------------------------------------------------------------- LAO/STO stack models

def _stack_case(name: str, work: Path, sizes: dict, override: Path | None, seed: int) -> Case:
    from inverscope.analysis.inference import expected_stack_shape
    from inverscope.datasets.io import open_4dstem
    from inverscope.datasets.store import ZarrCBEDWriter
    from inverscope.models.io import load_model, save_model
    from inverscope.models.nets import StackCNN3D, StackCNN3DConfig
    from inverscope.models.normalization import normalization_tensors, normalize

    classify = name == "lao_sto_classifier"
    ny, nx = sizes["stack_scan"]
    rng = np.random.default_rng(seed)
    if override is None:
        p, k, sampling = 12, 13, 3.5
    else:
        _, meta = load_model(override)
        p, k, _ = expected_stack_shape(meta)
        sampling = float(((meta.get("input") or {}).get("sampling_mrad") or [3.5])[0])
    # 20 mrad bright-field disc on a 13 x 13 px detector of 3.5 mrad/px, 1e4 electrons per pattern
    data = _discs(rng, ny * nx, k, 20.0 / sampling, 1e4, 0.5).reshape(ny, nx, k, k)
    store = work / f"{name}_scan.zarr"
    w = ZarrCBEDWriter(store, (ny, nx), (1, k, k), {"calibration": {"sampling_mrad": [sampling, sampling]}})
    w(0, ny * nx, data.reshape(-1, 1, k, k))
    w.close()
    if override is None:
        torch.manual_seed(seed)
        net = StackCNN3D(StackCNN3DConfig(input_shape=(p, k, k), channels=[8, 16, 16], kernel_size=3, pool=(2, 2, 2),
                                          hidden=64, dropout=0.15, num_outputs=2 if classify else 1))
        flat = data.reshape(-1, k, k)
        std = flat.std(0)
        meta = {"task": "classification" if classify else "regression",
                "class_names": ["rough", "intermixed"] if classify else [],
                "normalization": {"transform": "none", "mean": flat.mean(0).tolist(),
                                  "std": np.where(std > 1e-3, std, 1.0).tolist()},
                "input": {"positions": p, "pattern_shape": [k, k], "sampling_mrad": [sampling, sampling]},
                "benchmark": "predict_speed: random weights, recipes/lao_sto_quick.yaml net"}
        model_path = work / "models" / name
        save_model(model_path, net, "stack_cnn3d", meta)
    else:
        model_path = override

    # the network alone, on the stacks predict builds: chunks of 8 scan rows, batches of 256, normalised
    net, meta = load_model(model_path)
    four = open_4dstem(store)
    arr = np.asarray(four.data[:], np.float32)
    transform, mean, std = normalization_tensors(meta["normalization"])
    batches = []
    for l0 in range(0, ny, STACK_CHUNK_ROWS):
        win = np.lib.stride_tricks.sliding_window_view(arr[l0:l0 + STACK_CHUNK_ROWS], p, axis=1)
        stacks = np.moveaxis(win, -1, 2).reshape(-1, p, k, k)
        for i in range(0, len(stacks), STACK_BATCH):
            batches.append(normalize(torch.from_numpy(np.ascontiguousarray(stacks[i:i + STACK_BATCH])), transform,
                                     mean, std))
    net.eval()

    def forward():
        for xb in batches:
            net(xb)

    n_stacks = sum(len(b) for b in batches)
    return Case(name, model_path, [store], {}, float(ny * nx), "patterns", "a 13 x 13 px diffraction pattern of the scan",
                _model_info(model_path, override is not None, seed),
                {"format": "inverscope Zarr store (ZarrCBEDWriter, 16 positions per chunk)", "scan": [ny, nx],
                 "pattern_px": [k, k], "sampling_mrad": sampling, "stack_positions": p, "axis": 1, "stride": 1,
                 "stacks": n_stacks, "patterns_through_network": n_stacks * p},
                _timer(forward), f"StackCNN3D forward, {len(batches)} batches of <= {STACK_BATCH} stacks "
                f"(chunks of {STACK_CHUNK_ROWS} scan rows, as predict)", summary_keys=("wall_s",))


# --------------------------------------------------------------------------- KNN polarization models

def _knn_data(work: Path, sizes: dict, pixels: int, mrad: float, seed: int, cache: dict) -> Path:
    key = ("knn", pixels, mrad)
    if key not in cache:
        ny, nx = sizes["knn_scan"]
        data = _discs(np.random.default_rng(seed), ny * nx, pixels, 24.0 / mrad, 1e5, 1.0).reshape(ny, nx, pixels, pixels)
        path = work / f"knn_scan_{pixels}px.npy"
        np.save(path, data)
        cache[key] = path
    return cache[key]


def _knn_case(name: str, work: Path, sizes: dict, override: Path | None, seed: int, cache: dict) -> Case:
    from inverscope.analysis.polar_models import load_polar_model, polar_input, polar_metadata
    from inverscope.models.io import load_metadata, save_model
    from inverscope.models.nets import build_net
    from inverscope.training.regimes import RegimeResult

    if override is None:
        pixels, mrad = 32, 3.2
    else:
        inp = load_metadata(override)["input"]
        pixels, mrad = int(inp["pixels"]), float(inp["mrad_per_px"])
    path = _knn_data(work, sizes, pixels, mrad, seed, cache)
    data = np.load(path)
    ny, nx = data.shape[:2]
    if override is None:
        arch, cfg = KNN[name]
        torch.manual_seed(seed)
        net = build_net(arch, {**cfg, "input_size": pixels, "head": "classification", "outputs": 8})
        _, mean, std = polar_input(data.reshape(-1, pixels, pixels), per_pixel=True)
        res = RegimeResult(regime="classification", n_classes=8, history=[], best_epoch=-1,
                           best_val_accuracy=float("nan"), val_accuracy=float("nan"), wall_s=0.0, epochs_run=0,
                           n_train=0, kept_fraction=1.0)
        model_path = work / "models" / name
        save_model(model_path, net, arch, polar_metadata(
            regime=res, pixels=pixels, mrad_per_px=mrad, semiangle_mrad=24.0, energy_ev=200e3, mean=mean, std=std,
            class_labels=KNN_VARIANTS, extra={"benchmark": "predict_speed: random weights, recipes/knn_quick.yaml"}))
    else:
        model_path = override

    # the network alone on predict's input: chunks of 8 scan rows, polar_input, batches of 512
    model = load_polar_model(model_path)
    norm = model.meta["normalization"]
    batches = []
    for r0 in range(0, ny, KNN_CHUNK_ROWS):
        x = polar_input(data[r0:r0 + KNN_CHUNK_ROWS].reshape(-1, pixels, pixels), norm["mean"], norm["std"])[0]
        batches += [torch.from_numpy(x[i:i + KNN_BATCH]) for i in range(0, len(x), KNN_BATCH)]
    model.net.eval()

    def forward():
        for xb in batches:
            model.net(xb)

    return Case(name, model_path, [path], {}, float(ny * nx), "patterns",
                f"a {pixels} x {pixels} px diffraction pattern of the scan", _model_info(model_path, override is not None, seed),
                {"format": "4D .npy (scan_y, scan_x, ky, kx), float32 counts", "scan": [ny, nx],
                 "pattern_px": [pixels, pixels], "mrad_per_px": mrad},
                _timer(forward), f"{model.meta.get('architecture')} forward, {len(batches)} batches of <= {KNN_BATCH} "
                f"patterns (chunks of {KNN_CHUNK_ROWS} scan rows, as predict)", summary_keys=("wall_s", "patterns_per_s"))


# --------------------------------------------------------------------------- PACBED

def _pacbed_case(name: str, work: Path, sizes: dict, override: Path | None, seed: int) -> Case:
    from inverscope.analysis.pacbed_models import predict_with_uncertainty, to_input
    from inverscope.analysis.pacbed_predict import load_pacbed_model
    from inverscope.analysis.registration import register_pacbed, resample_to_crystal
    from inverscope.datasets.degrade import CameraModel, degrade
    from inverscope.models.io import save_model
    from inverscope.models.nets import PatternCNN, PatternCNNConfig

    patterns = np.load(PACBED_FIXTURE)
    fix = json.loads(PACBED_FIXTURE.with_suffix(".json").read_text())
    sampling, alpha = float(fix["sampling_mrad"]), float(fix["semiangle_mrad"])
    if override is None:
        pixels, crop_alpha = 48, 2.0
        on_grid = np.stack([resample_to_crystal(p, sampling, alpha, crop_alpha=crop_alpha, out_shape=(pixels, pixels))[0]
                            for p in patterns])
        _, mean, std = to_input(on_grid)
        torch.manual_seed(seed)
        net = PatternCNN(PatternCNNConfig(input_size=pixels, outputs=3, channels=[12, 24, 48, 48], hidden=64,
                                          dropout=0.1))
        meta = {"task": "pacbed", "targets": ["thickness_nm", "tilt_x_mrad", "tilt_y_mrad"],
                "target_scale": [100.0, 4.0, 4.0], "tilt": "folded into 0 <= ty <= tx (4mm)",
                "input": {"compound": "SrTiO3", "energy_ev": 200e3, "semiangle_mrad": alpha, "crop_alpha": crop_alpha,
                          "pixels": pixels, "out_mrad_per_px": 2 * crop_alpha * alpha / pixels,
                          "transform": "sqrt(frame / mean), standardized per pixel"},
                "normalization": {"mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()},
                "library": {"compound": "SrTiO3", "energy_kev": 200.0, "semiangle_mrad": alpha,
                            "thickness_nm": [1.0, 60.0, 1.0], "tilt_max_mrad": 2.0},
                "benchmark": "predict_speed: random weights, recipes/pacbed_sto.yaml net"}
        model_path = work / "models" / name
        save_model(model_path, net, "pattern_cnn", meta)
    else:
        model_path = override
    model = load_pacbed_model(model_path)

    gy, gx = sizes["pacbed_grid"]
    rng = np.random.default_rng(seed)
    frames = np.empty((gy * gx, 256, 256), np.float32)
    for i in range(gy * gx):
        cam = CameraModel(frame_shape=(256, 256), mrad_per_px=0.55, centre_px=tuple(128 + rng.uniform(-6, 6, 2)),
                          rotation_deg=float(rng.uniform(0, 90)), dose_e_per_pattern=1e6, background_counts=3.0)
        frames[i] = degrade(patterns[i % len(patterns)], cam, rng, sampling_mrad=sampling)[0]
    path = work / "pacbed_frames.npy"
    np.save(path, frames.reshape(gy, gx, 256, 256))

    # the network alone on the registered patterns predict reads: 16 MC-dropout passes, batches of 256
    radius = (max(4.0, model.pixels / (4 * model.crop_alpha)), 128.0)
    reference = model.mean.astype(np.float64) ** 2
    registered = np.stack([register_pacbed(f, model.semiangle_mrad, crop_alpha=model.crop_alpha,
                                           out_shape=(model.pixels, model.pixels), reference=reference,
                                           radius_range_px=radius).pattern for f in frames])
    x = to_input(registered, model.mean, model.std)[0]

    def forward():
        predict_with_uncertainty(model.net, x, model.target_scale, passes=PACBED_PASSES, seed=0, batch_size=PACBED_BATCH)

    return Case(name, model_path, [path], {"window": 1}, float(gy * gx), "PACBED images",
                "one PACBED frame (256 x 256 px), registered onto the model's grid and read",
                _model_info(model_path, override is not None, seed),
                {"format": "4D .npy (grid_y, grid_x, 256, 256) of camera frames, read with --window 1",
                 "grid": [gy, gx], "frame_px": [256, 256], "camera_mrad_per_px": 0.55,
                 "source_patterns": str(PACBED_FIXTURE.relative_to(ROOT))},
                _timer(forward), f"PatternCNN, {PACBED_PASSES} MC-dropout passes over {len(x)} registered patterns "
                f"(predict_with_uncertainty, batches of <= {PACBED_BATCH})", summary_keys=("timings_s",))


# --------------------------------------------------------------------------- atoms

def _atom_case(name: str, work: Path, sizes: dict, override: Path | None, seed: int) -> Case:
    from inverscope.analysis.atom_predict import load_atom_model
    from inverscope.datasets.atom_images import AtomImageConfig, AtomImageGenerator
    from inverscope.models.io import save_model
    from inverscope.models.nets.unet import UNet, UNetConfig, ensemble_predict

    if override is None:
        cfg = UNetConfig(n_classes=3, depth=3, base_channels=8)
        names = [f"atoms_{i}" for i in range(3)]
        meta = {"task": "atoms", "class_names": ["C", "Si"], "background_channel": -1, "pixel_size_angstrom": 0.16,
                "pixel_size_range_angstrom": [0.12, 0.2],
                "input": {"normalization": "per-image standardization (x - mean) / std", "multiple_of": 8},
                "locate": {"threshold": 0.5, "min_distance_px": 3, "refine": "centroid"}, "heatmap_sigma_px": 1.48,
                "benchmark": "predict_speed: random weights, recipes/atoms_graphene.yaml net x 3"}
        for i, n in enumerate(names):
            torch.manual_seed(seed + i)
            save_model(work / "models" / n, UNet(cfg), "unet", {**meta, "ensemble": names[1:] if i == 0 else []})
        model_path = work / "models" / names[0]
    else:
        model_path = override
    model = load_atom_model(model_path)
    size, nominal = sizes["atom_px"], model.nominal
    gen_cfg = AtomImageConfig(structures={"graphene": 1.0}, output_shape=(size, size),
                              pixel_size_angstrom=(nominal, nominal), energy_ev=[60000.0], dose_e_per_a2=(1e4, 1e4))
    sample = AtomImageGenerator(gen_cfg, seed=seed).sample(1, seed=seed)
    img = sample["images"][0, 0].numpy().astype(np.float32)
    truth = sample["truth"][0]
    n_true = int((~np.asarray(truth["is_vacancy"], bool)).sum())
    path = work / f"atoms_{size}px.npy"
    np.save(path, img)

    # the ensemble alone on predict's input: the standardised image, padded to a multiple, channels-last
    m = model.multiple
    std_img = (img.astype(np.float64) - img.mean()) / img.std()
    padded = np.pad(std_img, ((0, (-size) % m), (0, (-size) % m)), mode="reflect")
    x = torch.as_tensor(padded[None, None], dtype=torch.float32).contiguous(memory_format=torch.channels_last)

    def forward():
        ensemble_predict(model.nets, x)

    return Case(name, model_path, [path], {"pixel_size": nominal}, size * size / 1e6, "Mpx",
                f"a megapixel of a {size} x {size} px HAADF image", _model_info(model_path, override is not None, seed),
                {"format": "2D .npy, synthetic graphene HAADF (AtomImageGenerator, 60 kV, 1e4 e/Å²)",
                 "image_px": [size, size], "pixel_size_angstrom": nominal, "atoms_in_image": n_true},
                _timer(forward), f"ensemble_predict of {len(model.nets)} U-Net(s) (softmax, mean, std), channels-last",
                extra_timers={"network_grad_enabled": _timer(forward, grad=True)},
                summary_keys=("wall_s", "network_s", "n_atoms", "megapixels_per_s"))


# --------------------------------------------------------------------------- the run

def _prepare(name: str, work: Path, sizes: dict, override: Path | None, seed: int, cache: dict) -> Case:
    if name.startswith("lao_sto"):
        return _stack_case(name, work, sizes, override, seed)
    if name in KNN:
        return _knn_case(name, work, sizes, override, seed, cache)
    if name == "pacbed_cnn":
        return _pacbed_case(name, work, sizes, override, seed)
    return _atom_case(name, work, sizes, override, seed)


def _measure(case: Case, work: Path, repeats: int) -> dict:
    from inverscope.analysis.maps import predict_files

    outs = work / "out" / case.name
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir(parents=True)
    runs: list[dict] = []

    def predict(i: int) -> float:
        out = outs / f"run{i}"
        gc.collect()
        t = time.perf_counter()
        summary = predict_files(str(case.model_path), [str(p) for p in case.data_paths], str(out), **case.options)
        dt = time.perf_counter() - t
        runs.append({k: summary.get(k) for k in case.summary_keys})
        shutil.rmtree(out)
        return dt

    load_before = _load()
    warm = {"predict": predict(0), "network": case.network()}
    warm.update({k: fn() for k, fn in case.extra_timers.items()})
    times: dict[str, list[float]] = {"predict": [], "network": [], **{k: [] for k in case.extra_timers}}
    for r in range(repeats):
        times["predict"].append(predict(r + 1))
        gc.collect()
        times["network"].append(case.network())
        for k, fn in case.extra_timers.items():
            times[k].append(fn())
        print(f"  {case.name} {r + 1}/{repeats}: predict {times['predict'][-1]:.3f} s, network {times['network'][-1]:.3f} s"
              + "".join(f", {k} {v[-1]:.3f} s" for k, v in times.items() if k in case.extra_timers), flush=True)
    load_after = _load()

    pred, net = _spread(times["predict"]), _spread(times["network"])
    res = {"kind": case.name, "model": case.model, "data": case.data, "options": case.options,
           "count": case.count, "unit": case.unit, "pattern": case.pattern, "repeats": repeats,
           "predict_s": times["predict"], "predict_s_stats": pred,
           "rate_per_s": {"median": case.count / pred["median"], "min": case.count / pred["max"],
                          "max": case.count / pred["min"]},
           "network_what": case.network_what, "network_s": times["network"], "network_s_stats": net,
           "network_rate_per_s": case.count / net["median"], "network_share": net["median"] / pred["median"],
           "warmup_s": warm, "loadavg_before": load_before, "loadavg_after": load_after, "predict_summaries": runs[1:]}
    for k in case.extra_timers:
        res[f"{k}_s"] = times[k]
        res[f"{k}_s_stats"] = _spread(times[k])
        res[f"{k}_share"] = res[f"{k}_s_stats"]["median"] / pred["median"]
    if case.name == "atoms_unet":
        n_atoms = statistics.median(r["n_atoms"] for r in runs[1:])
        res["atoms_found"] = n_atoms
        res["atoms_per_s"] = n_atoms / pred["median"]
    return res


def _table(results: dict) -> str:
    head = ("case", "data", "predict s median [min, max]", "rate median [min, max]", "network s", "net share")
    rows = []
    for r in results.values():
        p, q, n = r["predict_s_stats"], r["rate_per_s"], r["network_s_stats"]
        unit = "Mpx/s" if r["unit"] == "Mpx" else ("PACBED/s" if r["unit"] == "PACBED images" else "patterns/s")
        count = f"{r['count']:.3g} Mpx" if r["unit"] == "Mpx" else f"{int(r['count'])} {r['unit']}"
        share = f"{100 * r['network_share']:.0f} %"
        if "network_grad_enabled_share" in r:
            share += f" ({100 * r['network_grad_enabled_share']:.0f} % with grad)"
        rate = f"{q['median']:.4g} [{q['min']:.4g}, {q['max']:.4g}] {unit}"
        if "atoms_per_s" in r:
            rate += f"; {r['atoms_per_s']:.0f} atoms/s"
        rows.append((r["kind"], count, f"{p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}]", rate,
                     f"{n['median']:.3f}", share))
    widths = [max(len(str(x[i])) for x in (head, *rows)) for i in range(len(head))]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def _overrides(items: list[str] | None) -> dict[str, Path]:
    out = {}
    for item in items or []:
        kind, sep, path = item.partition("=")
        if not sep or kind not in KINDS or not path:
            raise SystemExit(f"--model: got {item!r}; expected KIND=PATH with KIND one of {', '.join(KINDS)}")
        out[kind] = Path(path)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help=f"comma-separated cases (default all: {','.join(KINDS)})")
    ap.add_argument("--model", "--model-dir", dest="model", action="append", metavar="KIND=PATH",
                    help="use this (trained) model for KIND instead of a random-weight one; repeatable")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case after one warm-up (default 5; "
                    "1 with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="small scans and 1 repeat: a smoke test")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="directory for the data, models and outputs (default: a temporary "
                    "directory, removed at the end)")
    ap.add_argument("--out", default=str(OUT), help="JSON file (or a directory for predict_speed.json); "
                    f"default {OUT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    kinds = list(KINDS) if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise SystemExit(f"--only: unknown case(s) {bad}; choose from {', '.join(KINDS)}")
    overrides = _overrides(args.model)
    repeats = args.repeats if args.repeats is not None else (1 if args.tiny else 5)
    if repeats < 1:
        raise SystemExit("--repeats: must be >= 1")
    sizes = SIZES["tiny" if args.tiny else "full"]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.is_dir():
        out = out / "predict_speed.json"
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="predict_speed_")) if temp else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t_all = time.perf_counter()
    results, setup_s, cache = {}, {}, {}
    try:
        for kind in kinds:
            t = time.perf_counter()
            case = _prepare(kind, work, sizes, overrides.get(kind), args.seed, cache)
            setup_s[kind] = time.perf_counter() - t
            print(f"{kind}: {case.count:.4g} {case.unit}, model {case.model['weights']} (setup {setup_s[kind]:.1f} s)",
                  flush=True)
            results[kind] = _measure(case, work, repeats)
            results[kind]["setup_s"] = setup_s[kind]
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "predict_speed", "issue": 15, "date": started, "machine": _machine(args.threads),
              "settings": {"tiny": args.tiny, "repeats": repeats, "seed": args.seed, "sizes": sizes,
                           "cases": kinds, "models": {k: str(v) for k, v in overrides.items()}},
              "protocol": ("predict_files (= inverscope predict, no progress bar) into a fresh output directory: one "
                           "warm-up, then `repeats` timed runs, each followed by the network alone on predict's inputs "
                           "(torch.inference_mode, predict's batch size); rate = patterns in the data / seconds"),
              "results": results, "total_wall_s": time.perf_counter() - t_all}
    out.parent.mkdir(parents=True, exist_ok=True)
    from inverscope.core.io import write_json_atomic

    write_json_atomic(out, json.loads(json.dumps(report, default=_jsonable)))
    print(_table(results))
    loads = [f"{k} {v['loadavg_before']} -> {v['loadavg_after']}" for k, v in results.items()]
    print("load average (1, 5, 15 min) before -> after each case: " + "; ".join(loads))
    print(f"-> {out} ({report['total_wall_s']:.0f} s)")
    return report


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


if __name__ == "__main__":
    main()
