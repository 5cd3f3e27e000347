"""One prepared GPU benchmark suite: every throughput figure of inverscope in one JSON.

Sections (each in its own try/except; a failure is recorded as ``"error"`` with the message
and the suite goes on):

``multislice``
    SrTiO3 [001] as in ``benchmarks/multislice_vs_abtem.py`` (3 x 3 cells, 240 x 240 grid,
    slices of half a unit cell, ~100 Å, 200 kV, 20 mrad, 160 x 160 patterns), complex64
    (``dtype=torch.float32``). Patterns/s on the device over a 32 x 32 scan of one unit cell
    for several ``batch_size`` values (and the library's automatic one), static and with 4
    frozen-phonon configurations; the same case on the CPU on a 4 x 4 subset of the scan (the
    ratio device/CPU); abTEM (CPU, default settings) on that subset when ``import abtem``
    works, and abTEM on the GPU (cupy) on the full scan when ``import cupy`` works.
    Agreement: relative L2 error of the 4D intensity, device vs CPU and inverscope vs abTEM.
    Each timed run is a whole ``MultisliceSimulation.run()`` (transmission functions, probes,
    propagation, detector, copy to host).
``campaign``
    LAO/STO campaign samples/s on the device, in this process (no Dask): the campaign of
    ``recipes/lao_sto_quick.yaml`` (and, on CUDA, ``recipes/lao_sto_paper.yaml``) with
    ``compute.device`` set to the device; ``simulate_sample`` in a loop (after one warm-up
    sample), then ``run_campaign(n_workers=0)`` end to end into a temporary Zarr store.
``training``
    Optimizer steps/s (Adam, cross-entropy, synthetic random data already on the device) for
    the shipped 2D pattern classifiers (``pattern_classifiers.SHIPPED``, 64 x 64 patterns,
    channels-last) and the 3D stack CNN (``stack_cnn3d``) at the LAO/STO stack shapes of the
    quick recipe (12 positions x 13 x 13, channels [8, 16, 16]) and the paper recipe
    (13 x 25 x 25, channels [32, 64, 64]); fp32 and bf16 autocast
    (``torch.autocast(device_type, dtype=torch.bfloat16)``, no grad scaler needed for bf16).
``inference``
    Forward patterns/s (eval, ``torch.inference_mode``, inputs already on the device) for the
    same models, batch size swept (256 ... 65536 on CUDA), fp32 and bf16 weights, contiguous
    and channels-last, then ``torch.compile`` of the best eager variant at its best batch
    size (CUDA only unless ``--compile on``). A 3D stack counts as ``positions`` patterns
    (``patterns_per_s = stacks_per_s * positions``); both are recorded. The best configuration
    per model and whether it reaches 100k patterns/s (the goal on an H100/H200-class GPU) are
    reported.

Timing: ``torch.cuda.synchronize()`` around every timed region, warm-up before timing,
median of >= 3 repeats (1-2 with ``--tiny``). The environment (device name, torch, CUDA and
cuDNN versions, TF32 flags, CPU count, date, load average) is recorded.

Robustness: a global ``--budget-s`` (default 420) is shared out among the sections (unused
time rolls over); anything that would start after the budget is recorded as ``"skipped"``.
The JSON is written atomically (temp file + ``os.replace``) after every section and after
every model, so a run killed by a timeout still leaves its results. Progress lines are
printed as they happen.

Run on a lent GPU machine (one CUDA device; about 7-8 min with the default budget)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/gpu_suite.py --out benchmarks/results/gpu_suite.json

and on a CPU, tiny sizes, to check that it runs (what ``tests/test_gpu_suite.py`` does)::

    python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/gpu_suite.json

Options: ``--only multislice,training`` runs a subset; ``--models resnet18_quick,stack_cnn3d_quick``
restricts the networks; ``--compile on|off|auto``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("inverscope") is None:  # run from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "src"))

SCHEMA = "inverscope.gpu_suite/1"
SECTIONS = ("multislice", "campaign", "training", "inference")
#: share of the budget each section gets (what a section leaves unused rolls over to the next)
SHARES = {"multislice": 0.2, "campaign": 0.12, "training": 0.2, "inference": 0.48}
TARGET_PATTERNS_PER_S = 100_000
A_STO = 3.905
SIGMAS = {"Sr": 0.08, "Ti": 0.065, "O": 0.085}
OUT = ROOT / "benchmarks" / "results" / "gpu_suite.json"

#: the 3D stack CNNs: LAO/STO stack shapes (positions, ky, kx) and nets of the two recipes
STACK_MODELS = {
    "stack_cnn3d_quick": {"input_shape": (12, 13, 13), "channels": [8, 16, 16], "hidden": 64, "num_outputs": 2},
    "stack_cnn3d_paper": {"input_shape": (13, 25, 25), "channels": [32, 64, 64], "hidden": 128, "num_outputs": 2},
}
#: models in the order they are run (cheap and goal-relevant first, so a short budget still covers them)
MODEL_ORDER = ["resnet18_quick", "vgg11_bn_quick", "stack_cnn3d_quick", "stack_cnn3d_paper", "polarization_cnn",
               "resnet18", "vgg16_bn", "resnet50"]
TINY_MODELS = ["resnet18_quick", "stack_cnn3d_quick"]


# --------------------------------------------------------------------------- sizes
def sizes(tiny: bool, cuda: bool) -> dict:
    """Problem sizes: the full ones for a GPU, tiny ones for a CPU check."""
    if tiny:
        return {"ms_cells": 1, "ms_gpts": 64, "ms_cells_z": 2, "ms_scan": 4, "ms_cpu_scan": 2, "ms_batches": [4, 16],
                "ms_phonons": 2, "repeats": 1, "campaign_samples": 2, "campaign_paper": False,
                "pattern_size": 32, "train_batch": 4, "train_steps": 2, "train_warmup": 1,
                "infer_batches": [8, 32], "min_timed_s": 0.0, "max_batch_s": 5.0, "compile_min_s": 0.0}
    return {"ms_cells": 3, "ms_gpts": 240, "ms_cells_z": 25, "ms_scan": 32 if cuda else 8, "ms_cpu_scan": 4,
            "ms_batches": [64, 256, 1024] if cuda else [16, 64], "ms_phonons": 4, "repeats": 3,
            "campaign_samples": 16 if cuda else 2, "campaign_paper": cuda,
            "pattern_size": 64, "train_batch": 256 if cuda else 32, "train_steps": 10 if cuda else 2, "train_warmup": 3,
            "infer_batches": [256, 1024, 4096, 16384, 65536] if cuda else [64, 256],
            "min_timed_s": 0.05, "max_batch_s": 2.0, "compile_min_s": 15.0}


# --------------------------------------------------------------------------- helpers
def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _clean(obj):
    """JSON-safe copy: non-finite floats become None, tuples lists, numpy scalars Python ones."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def write_json(path: Path, results: dict) -> None:
    """Write `results` to `path` atomically (temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(results), fh, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Clock:
    """Global and per-section deadlines, progress output and incremental saving."""

    def __init__(self, budget_s: float, out: Path, results: dict, device: torch.device):
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + max(0.0, float(budget_s))
        self.section_deadline = self.deadline
        self.out, self.results, self.device = out, results, device

    def left(self) -> float:
        """Seconds left in the current section (never beyond the global budget)."""
        return min(self.deadline, self.section_deadline) - time.perf_counter()

    def global_left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", flush=True)

    def save(self) -> None:
        self.results["wall_s"] = time.perf_counter() - self.t0
        write_json(self.out, self.results)


def timed(clock: Clock, fn, repeats: int, warmup: int = 1) -> tuple[float, list[float], object]:
    """Median wall time [s] of `fn()` over `repeats` runs after `warmup` runs (synchronized)."""
    out = None
    for _ in range(warmup):
        out = fn()
        clock.sync()
    times = []
    for _ in range(max(1, repeats)):
        clock.sync()
        t = time.perf_counter()
        out = fn()
        clock.sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def environment(device: torch.device) -> dict:
    env = {"date": _now(), "python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_start": _load(),
           "device": str(device), "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import inverscope

        env["inverscope"] = inverscope.__version__
    except Exception as exc:  # noqa: BLE001
        env["inverscope"] = _err(exc)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"device_name": torch.cuda.get_device_name(device), "device_memory_gib": props.total_memory / 2**30,
                    "device_capability": list(torch.cuda.get_device_capability(device)),
                    "multiprocessors": props.multi_processor_count,
                    "cudnn_benchmark": torch.backends.cudnn.benchmark,
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32})
    else:
        env["device_name"] = platform.processor() or platform.machine()
    for mod in ("numpy", "abtem", "cupy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            env[mod] = "not installed" if isinstance(exc, ImportError) else _err(exc)
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        env["git_commit"] = None
    return env


# --------------------------------------------------------------------------- 1. multislice
def section_multislice(clock: Clock, rec: dict, sz: dict, args) -> None:
    from inverscope.core.grid import Grid
    from inverscope.physics.multislice.detectors import PixelatedDetector
    from inverscope.physics.multislice.phonons import FrozenPhonons
    from inverscope.physics.multislice.potentials import PotentialBuilder
    from inverscope.physics.multislice.probe import Probe
    from inverscope.physics.multislice.scan import grid_scan
    from inverscope.physics.multislice.simulate import MultisliceSimulation
    from inverscope.physics.structures import perovskite_slab

    dev = clock.device
    cells, gpts, cz = sz["ms_cells"], sz["ms_gpts"], sz["ms_cells_z"]
    n_scan, n_cpu = sz["ms_scan"], sz["ms_cpu_scan"]
    if n_scan % n_cpu:
        raise ValueError(f"the CPU scan ({n_cpu}) must divide the device scan ({n_scan})")
    atoms = perovskite_slab("SrTiO3", cells, cz * A_STO)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (gpts, gpts))
    configs = FrozenPhonons(SIGMAS, sz["ms_phonons"], seed=0).configurations(atoms)
    phon_positions = [c.positions for c in configs]
    scan_dev = grid_scan((0, 0), (A_STO, A_STO), (n_scan, n_scan))
    scan_cpu = grid_scan((0, 0), (A_STO, A_STO), (n_cpu, n_cpu))
    r = n_scan // n_cpu
    subset = np.array([(i * r) * n_scan + j * r for i in range(n_cpu) for j in range(n_cpu)])
    assert np.allclose(scan_dev.positions_angstrom[subset], scan_cpu.positions_angstrom)
    rec["setup"] = {"structure": f"SrTiO3 [001] {cells}x{cells} cells, {cz * A_STO:.1f} Å ({2 * cz} slices of A/2)",
                    "gpts": [gpts, gpts], "energy_ev": 200e3, "semiangle_mrad": 20.0, "dtype": "complex64 (float32)",
                    "device_scan": [n_scan, n_scan], "cpu_scan": [n_cpu, n_cpu], "phonon_configs": sz["ms_phonons"],
                    "repeats": sz["repeats"], "timed": "whole MultisliceSimulation.run() incl. potential and copy to host",
                    "note": "the CPU runs the cpu_scan subset only, so its fixed cost per run (transmission functions) "
                            "weighs more; speedup_device_vs_cpu_static_same_positions compares like with like"}

    def sim(scan, device, batch_size=None, phonons=None):
        return MultisliceSimulation(PotentialBuilder(atoms, grid, A_STO / 2), Probe(200e3, 20.0), scan,
                                    PixelatedDetector(), phonons=phonons, device=str(device), batch_size=batch_size)

    def flat(result):  # (*scan, thickness, kx, ky) -> (positions, kx, ky), the one exit thickness
        return result.array[..., 0, :, :].reshape(-1, *result.array.shape[-2:])

    def run(scan, device, batch_size=None, phonons=None):
        s = sim(scan, device, batch_size, phonons)
        return lambda: flat(s.run())

    head = rec.setdefault("headline", {})
    # device, static: batch sizes swept
    rows, best, dev_static = {}, None, None
    for bs in [*sz["ms_batches"], None]:
        key = "auto" if bs is None else str(bs)
        if clock.left() <= 0:
            rows[key] = {"skipped": "section time box"}
            continue
        try:
            s = sim(scan_dev, dev, bs)
            med, ts, out = timed(clock, lambda: flat(s.run()), sz["repeats"])
            rows[key] = {"batch_size": s.batch_size, "median_s": med, "runs_s": ts, "patterns_per_s": len(scan_dev) / med}
            clock.log(f"multislice {dev} static batch {s.batch_size:5d}: {len(scan_dev) / med:10.1f} patterns/s")
            if best is None or med < best[1]:
                best, dev_static = (s.batch_size, med), out
        except Exception as exc:  # noqa: BLE001
            rows[key] = {"error": _err(exc)}
            clock.log(f"multislice batch {key}: {_err(exc)}")
            _free_memory()
    rec["device_static"] = rows
    if best is None:
        raise RuntimeError("no device run of the static case succeeded: "
                           + "; ".join(f"{k}: {v.get('error', v.get('skipped'))}" for k, v in rows.items()))
    rec["device_best_batch_size"] = best[0]
    head["device_patterns_per_s_static"] = len(scan_dev) / best[1]
    clock.save()

    # device, frozen phonons at the best batch size
    dev_phon = None
    if clock.left() > 0:
        try:
            med, ts, dev_phon = timed(clock, run(scan_dev, dev, best[0], phon_positions), sz["repeats"])
            rec["device_phonons"] = {"batch_size": best[0], "num_configs": len(configs), "median_s": med, "runs_s": ts,
                                     "patterns_per_s": len(scan_dev) / med}
            head["device_patterns_per_s_phonons"] = len(scan_dev) / med
            clock.log(f"multislice {dev} {len(configs)} phonon configs: {len(scan_dev) / med:10.1f} patterns/s")
        except Exception as exc:  # noqa: BLE001
            rec["device_phonons"] = {"error": _err(exc)}
    else:
        rec["device_phonons"] = {"skipped": "section time box"}
    clock.save()

    # the device on the CPU's positions only: a like-for-like ratio (the fixed cost per run weighs the same)
    if clock.left() > 0:
        try:
            med, ts, _ = timed(clock, run(scan_cpu, dev, best[0]), sz["repeats"])
            rec["device_static_cpu_positions"] = {"positions": len(scan_cpu), "median_s": med, "runs_s": ts,
                                                  "patterns_per_s": len(scan_cpu) / med}
        except Exception as exc:  # noqa: BLE001
            rec["device_static_cpu_positions"] = {"error": _err(exc)}
    else:
        rec["device_static_cpu_positions"] = {"skipped": "section time box"}

    # CPU on a subset of the scan, for the ratio and the agreement
    cpu_static = cpu_phon = None
    if clock.left() > 0:
        try:
            med, ts, cpu_static = timed(clock, run(scan_cpu, "cpu"), sz["repeats"])
            rec["cpu_static"] = {"positions": len(scan_cpu), "median_s": med, "runs_s": ts,
                                 "patterns_per_s": len(scan_cpu) / med, "torch_threads": torch.get_num_threads()}
            head["cpu_patterns_per_s_static"] = len(scan_cpu) / med
            head["speedup_device_vs_cpu_static"] = head["device_patterns_per_s_static"] / head["cpu_patterns_per_s_static"]
            same = rec["device_static_cpu_positions"].get("patterns_per_s")
            if same:
                head["speedup_device_vs_cpu_static_same_positions"] = same / head["cpu_patterns_per_s_static"]
            clock.log(f"multislice cpu static: {len(scan_cpu) / med:10.1f} patterns/s")
        except Exception as exc:  # noqa: BLE001
            rec["cpu_static"] = {"error": _err(exc)}
    else:
        rec["cpu_static"] = {"skipped": "section time box"}
    if clock.left() > 0:
        try:
            med, ts, cpu_phon = timed(clock, run(scan_cpu, "cpu", None, phon_positions), max(1, sz["repeats"] // 2))
            rec["cpu_phonons"] = {"positions": len(scan_cpu), "median_s": med, "runs_s": ts,
                                  "patterns_per_s": len(scan_cpu) / med}
            if "device_patterns_per_s_phonons" in head:
                head["speedup_device_vs_cpu_phonons"] = head["device_patterns_per_s_phonons"] / (len(scan_cpu) / med)
        except Exception as exc:  # noqa: BLE001
            rec["cpu_phonons"] = {"error": _err(exc)}
    else:
        rec["cpu_phonons"] = {"skipped": "section time box"}
    agree = {}
    if cpu_static is not None:
        agree["device_vs_cpu_static"] = rel_l2(dev_static[subset], cpu_static)
    if cpu_phon is not None and dev_phon is not None:
        agree["device_vs_cpu_phonons"] = rel_l2(dev_phon[subset], cpu_phon)
    rec["agreement_rel_l2"] = agree
    clock.save()

    # abTEM on the CPU subset (default settings), and on the GPU with cupy if it is installed
    rec["abtem_cpu"] = rec["abtem_gpu"] = {"skipped": "--no-abtem"} if args.no_abtem else None
    if args.no_abtem:
        return
    try:
        import abtem
    except Exception as exc:  # noqa: BLE001
        rec["abtem_cpu"] = rec["abtem_gpu"] = {"not_installed": _err(exc)}
        return

    def run_abtem(phonons: bool, n: int):
        ens = abtem.AtomsEnsemble(configs) if phonons else atoms
        pot = abtem.Potential(ens, gpts=(gpts, gpts), slice_thickness=A_STO / 2)
        probe = abtem.Probe(energy=200e3, semiangle_cutoff=20)
        scan = abtem.GridScan(start=(0, 0), end=(A_STO, A_STO), gpts=(n, n), endpoint=False)
        meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="cutoff"))
        arr = meas.compute(progress_bar=False).array
        arr = arr.get() if hasattr(arr, "get") else np.asarray(arr)  # cupy -> numpy
        arr = arr.mean(0) if arr.ndim == 5 else arr
        return arr.reshape(n * n, *arr.shape[-2:])

    ab = {"version": abtem.__version__, "positions": len(scan_cpu)}
    for name, phon, ours in (("static", False, cpu_static), ("phonons", True, cpu_phon)):
        if clock.left() <= 0:
            ab[name] = {"skipped": "section time box"}
            continue
        try:
            med, ts, arr = timed(clock, lambda: run_abtem(phon, n_cpu), max(1, sz["repeats"] // (2 if phon else 1)))
            ab[name] = {"median_s": med, "runs_s": ts, "patterns_per_s": len(scan_cpu) / med}
            if ours is not None:
                ab[name]["rel_l2_vs_inverscope_cpu"] = rel_l2(ours.reshape(arr.shape), arr)
            clock.log(f"multislice abTEM cpu {name}: {len(scan_cpu) / med:10.1f} patterns/s")
        except Exception as exc:  # noqa: BLE001
            ab[name] = {"error": _err(exc)}
    for name in ("static", "phonons"):
        if isinstance(ab.get(name), dict) and "patterns_per_s" in ab[name]:
            head[f"abtem_cpu_patterns_per_s_{name}"] = ab[name]["patterns_per_s"]
            ours = rec.get(f"cpu_{name}", {}).get("patterns_per_s")
            if ours:
                ab[name]["inverscope_cpu_speedup"] = ours / ab[name]["patterns_per_s"]
    rec["abtem_cpu"] = ab
    clock.save()

    if dev.type != "cuda":
        rec["abtem_gpu"] = {"skipped": "device is not CUDA"}
        return
    try:
        importlib.import_module("cupy")
    except Exception as exc:  # noqa: BLE001
        rec["abtem_gpu"] = {"not_installed": f"cupy: {_err(exc)}"}
        return
    if clock.left() <= 0:
        rec["abtem_gpu"] = {"skipped": "section time box"}
        return
    try:
        with abtem.config.set({"device": "gpu"}):
            med, ts, arr = timed(clock, lambda: run_abtem(False, n_scan), sz["repeats"])
        rec["abtem_gpu"] = {"positions": len(scan_dev), "median_s": med, "runs_s": ts,
                            "patterns_per_s": len(scan_dev) / med,
                            "rel_l2_vs_inverscope_device": rel_l2(dev_static.reshape(arr.shape), arr)}
        head["abtem_gpu_patterns_per_s_static"] = len(scan_dev) / med
        clock.log(f"multislice abTEM gpu static: {len(scan_dev) / med:10.1f} patterns/s")
    except Exception as exc:  # noqa: BLE001
        rec["abtem_gpu"] = {"error": _err(exc)}


# --------------------------------------------------------------------------- 2. campaign
def _campaign_config(recipe: str, device: torch.device, tiny: bool):
    import yaml

    from inverscope.core.config import validate
    from inverscope.datasets.campaign import CampaignConfig

    data = yaml.safe_load((ROOT / "recipes" / recipe).read_text())["campaign"]
    data["compute"] = {**data.get("compute", {}), "device": str(device)}
    if tiny:
        data["structure"] = {**data["structure"], "depth_cells": 4, "step_range": [0.25, 0.75]}
        data["microscope"] = {**data["microscope"], "phonon_configs": 1}
        data["lines"] = {**data["lines"], "num_positions": 3}
        data["thicknesses_cells"] = [4]
    return validate(CampaignConfig, data, recipe)


def section_campaign(clock: Clock, rec: dict, sz: dict, args) -> None:
    from inverscope.datasets.campaign import run_campaign, simulate_sample

    recipes = ["lao_sto_quick.yaml"] + (["lao_sto_paper.yaml"] if sz["campaign_paper"] else [])
    head = rec.setdefault("headline", {})
    for k, recipe in enumerate(recipes):
        key = recipe.removesuffix(".yaml")
        row = rec.setdefault(key, {})
        if clock.left() <= 0:
            row["skipped"] = "section time box"
            continue
        try:
            cfg = _campaign_config(recipe, clock.device, args.tiny)
            n_sims = len(cfg.lines.x_cells) * cfg.lines.num_positions
            row["config"] = {"depth_cells": cfg.structure.depth_cells, "phonon_configs": cfg.microscope.phonon_configs,
                             "lines": len(cfg.lines.x_cells), "positions": cfg.lines.num_positions,
                             "thicknesses_cells": cfg.exit_cells(), "detector_shape": list(cfg.microscope.detector_shape),
                             "energy_ev": cfg.microscope.energy_ev, "device": cfg.compute.device}
            t = time.perf_counter()
            simulate_sample(cfg, 0)  # warm-up (FFT plans, kernels)
            clock.sync()
            row["warmup_s"] = time.perf_counter() - t
            # simulate_sample in a loop, time-boxed (at least 1 sample, at most campaign_samples)
            times = []
            budget = 0.6 * clock.left() / (len(recipes) - k)  # the rest for run_campaign and the next recipe
            t_all = time.perf_counter()
            for i in range(1, 1 + sz["campaign_samples"]):
                t = time.perf_counter()
                simulate_sample(cfg, i)
                clock.sync()
                times.append(time.perf_counter() - t)
                if time.perf_counter() - t_all > budget:
                    break
            med = statistics.median(times)
            row["simulate_sample"] = {"samples": len(times), "sample_s": times, "median_s": med,
                                      "samples_per_s": len(times) / sum(times), "multislice_positions_per_sample": n_sims,
                                      "positions_per_s": n_sims * len(times) / sum(times)}
            head[f"{key}_samples_per_s"] = len(times) / sum(times)
            clock.log(f"campaign {key}: {len(times) / sum(times):8.3f} samples/s ({len(times)} samples, simulate_sample)")
            clock.save()
            # end to end into a temporary store (in-process, n_workers=0)
            n_store = max(1, min(len(times), sz["campaign_samples"]))
            if clock.left() < 1.5 * med * (n_store + 1):
                row["run_campaign"] = {"skipped": "section time box"}
                continue
            with tempfile.TemporaryDirectory(prefix="gpu_suite_campaign_") as tmp:
                cfg_n = cfg.model_copy(update={"num_samples": n_store})
                t = time.perf_counter()
                res = run_campaign(cfg_n, Path(tmp) / "store.zarr", n_workers=0)
                wall = time.perf_counter() - t
            row["run_campaign"] = {"samples": n_store, "wall_s": wall, "samples_per_s": n_store / wall,
                                   "library_wall_s": res.get("wall_s"), "simulated": res.get("simulated"),
                                   "includes": "config and resource checks, store creation, lock, Zarr writes"}
            head[f"{key}_run_campaign_samples_per_s"] = n_store / wall
            clock.log(f"campaign {key}: {n_store / wall:8.3f} samples/s (run_campaign into a Zarr store)")
        except Exception as exc:  # noqa: BLE001
            row["error"] = _err(exc)
            row["traceback"] = traceback.format_exc(limit=6)
            clock.log(f"campaign {key}: {_err(exc)}")
        clock.save()
    if not head:
        raise RuntimeError("; ".join(f"{k}: {v.get('error', v.get('skipped'))}" for k, v in rec.items()
                                     if isinstance(v, dict) and k != "headline"))


# --------------------------------------------------------------------------- models
def build_model(name: str, pattern_size: int) -> tuple[torch.nn.Module, tuple[int, ...], int, str]:
    """(net, input shape without batch, patterns per sample, kind) of a named model."""
    from inverscope.core.config import validate
    from inverscope.models.nets import NETS
    from inverscope.models.nets.pattern_classifiers import SHIPPED

    torch.manual_seed(0)
    if name in STACK_MODELS:
        cls, cfg_cls = NETS["stack_cnn3d"]
        cfg = dict(STACK_MODELS[name])
        net = cls(validate(cfg_cls, cfg, name))
        shape = tuple(cfg["input_shape"])
        return net, (1, *shape), shape[0], "3d"
    if name not in SHIPPED:
        raise KeyError(f"unknown model {name!r}; allowed: {', '.join([*SHIPPED, *STACK_MODELS])}")
    arch, cfg = SHIPPED[name]
    cls, cfg_cls = NETS[arch]
    net = cls(validate(cfg_cls, {**cfg, "input_size": pattern_size}, name))
    return net, (1, pattern_size, pattern_size), 1, "2d"


def _format(kind: str, channels_last: bool):
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if kind == "2d" else torch.channels_last_3d


def _model_list(args) -> list[str]:
    if args.models:
        return [m.strip() for m in args.models.split(",") if m.strip()]
    return TINY_MODELS if args.tiny else MODEL_ORDER


def _outputs(net) -> int:
    cfg = net.config
    return int(getattr(cfg, "outputs", None) or getattr(cfg, "num_outputs", 2))


# --------------------------------------------------------------------------- 3. training
def train_rate(clock: Clock, name: str, precision: str, sz: dict) -> dict:
    """Optimizer steps/s of `name`: build, `train_warmup` steps, then `repeats` timed blocks of steps."""
    dev = clock.device
    net, shape, per_sample, kind = build_model(name, sz["pattern_size"])
    fmt = _format(kind, channels_last=True)
    net = net.to(dev).to(memory_format=fmt).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = sz["train_batch"]
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand((bs, *shape), generator=gen, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, _outputs(net), (bs,), generator=gen, device=dev)
    use_bf16 = precision == "bf16"

    def steps(n):
        loss = None
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        return loss

    t = time.perf_counter()
    steps(sz["train_warmup"])  # cuDNN autotuning, allocator, Adam state
    clock.sync()
    warmup_s = time.perf_counter() - t
    n = sz["train_steps"]
    med, ts, loss = timed(clock, lambda: steps(n), sz["repeats"], warmup=0)
    return {"batch_size": bs, "steps_per_repeat": n, "warmup_s": warmup_s, "median_s": med, "runs_s": ts,
            "steps_per_s": n / med, "samples_per_s": n * bs / med, "patterns_per_s": n * bs * per_sample / med,
            "memory_format": str(fmt).removeprefix("torch."), "precision": "bf16 autocast" if use_bf16 else "fp32",
            "final_loss": float(loss.detach().float().cpu()), "parameters": sum(p.numel() for p in net.parameters())}


def section_training(clock: Clock, rec: dict, sz: dict, args) -> None:
    models = _model_list(args)
    rec["setup"] = {"optimizer": "Adam lr 1e-3", "loss": "cross-entropy", "data": "uniform random, on the device",
                    "batch_size": sz["train_batch"], "pattern_size": sz["pattern_size"], "repeats": sz["repeats"],
                    "warmup_steps": sz["train_warmup"], "steps_per_repeat": sz["train_steps"]}
    rows = rec.setdefault("models", {})
    head = rec.setdefault("headline", {})
    for k, name in enumerate(models):
        row = rows.setdefault(name, {})
        share_end = time.perf_counter() + clock.left() / (len(models) - k)
        for precision in ("fp32", "bf16"):
            if clock.left() <= 0 or time.perf_counter() > share_end:
                row[precision] = {"skipped": "time box"}
                continue
            try:
                r = train_rate(clock, name, precision, sz)
                row[precision] = r
                head[f"{name}_{precision}_steps_per_s"] = r["steps_per_s"]
                clock.log(f"training {name:18s} {precision}: {r['steps_per_s']:8.2f} steps/s "
                          f"({r['samples_per_s']:10.1f} samples/s, batch {r['batch_size']})")
            except Exception as exc:  # noqa: BLE001
                row[precision] = {"error": _err(exc)}
                clock.log(f"training {name} {precision}: {_err(exc)}")
            _free_memory()
        if isinstance(row.get("fp32"), dict) and isinstance(row.get("bf16"), dict) \
                and "steps_per_s" in row["fp32"] and "steps_per_s" in row["bf16"]:
            row["bf16_speedup"] = row["bf16"]["steps_per_s"] / row["fp32"]["steps_per_s"]
        clock.save()
    if not head:
        raise RuntimeError("no model trained: " + "; ".join(f"{m}: {v}" for m, v in rows.items()))


# --------------------------------------------------------------------------- 4. inference
def _infer_once(clock: Clock, fwd, x, sz: dict, repeats: int) -> tuple[float, list[float]]:
    """Median seconds per forward call of `fwd(x)` (warm-up, then `repeats` timed blocks)."""
    with torch.inference_mode():
        fwd(x)
        clock.sync()
        t = time.perf_counter()
        fwd(x)
        clock.sync()
        t1 = time.perf_counter() - t
        iters = 1 if sz["min_timed_s"] <= 0 else int(min(50, max(1, math.ceil(sz["min_timed_s"] / max(t1, 1e-6)))))
        times = []
        for _ in range(repeats):
            clock.sync()
            t = time.perf_counter()
            for _ in range(iters):
                fwd(x)
            clock.sync()
            times.append((time.perf_counter() - t) / iters)
    return statistics.median(times), times


def infer_model(clock: Clock, name: str, sz: dict, compile_on: bool, model_deadline: float) -> dict:
    dev = clock.device
    base, shape, per_sample, kind = build_model(name, sz["pattern_size"])
    base.eval()
    out = {"kind": kind, "input_shape": list(shape), "patterns_per_sample": per_sample,
           "parameters": sum(p.numel() for p in base.parameters()), "eager": {}}
    best = None

    def left():
        return min(model_deadline - time.perf_counter(), clock.left())

    for precision in ("fp32", "bf16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for cl in (False, True):
            vkey = f"{precision}_{'channels_last' if cl else 'contiguous'}"
            vrow = out["eager"].setdefault(vkey, {})
            if left() <= 0:
                vrow["skipped"] = "time box"
                continue
            fmt = _format(kind, cl)
            try:
                net = base.to(dev, dtype=dtype).to(memory_format=fmt)
            except Exception as exc:  # noqa: BLE001
                vrow["error"] = _err(exc)
                continue
            v_best = 0.0
            for bs in sz["infer_batches"]:
                if left() <= 0:
                    vrow[str(bs)] = {"skipped": "time box"}
                    continue
                try:
                    x = torch.rand((bs, *shape), device=dev, dtype=dtype).contiguous(memory_format=fmt)
                    med, ts = _infer_once(clock, net, x, sz, sz["repeats"])
                    del x
                    rate = bs / med
                    vrow[str(bs)] = {"median_s": med, "runs_s": ts, "samples_per_s": rate,
                                     "patterns_per_s": rate * per_sample}
                    if best is None or rate > best["samples_per_s"]:
                        best = {"variant": vkey, "precision": precision, "channels_last": cl, "compiled": False,
                                "batch_size": bs, "samples_per_s": rate, "patterns_per_s": rate * per_sample}
                    if rate < 0.9 * v_best or med > sz["max_batch_s"]:
                        v_best = max(v_best, rate)
                        break  # larger batches will not help (or take too long)
                    v_best = max(v_best, rate)
                except Exception as exc:  # noqa: BLE001
                    vrow[str(bs)] = {"error": _err(exc), "out_of_memory": _is_oom(exc)}
                    _free_memory()
                    break  # out of memory (or broken): larger batches fail too
            _free_memory()
            if v_best:
                clock.log(f"inference {name:18s} {vkey:22s}: best {v_best * per_sample:12.1f} patterns/s")
    clock.save()
    # torch.compile of the best eager variant at its best batch size
    if not compile_on:
        out["compiled"] = {"skipped": "compile off (default off on CPU; --compile on to force)"}
    elif best is None:
        out["compiled"] = {"skipped": "no eager variant ran"}
    elif left() <= max(0.0, sz["compile_min_s"]):
        out["compiled"] = {"skipped": f"time box ({left():.0f} s left; compiling needs about {sz['compile_min_s']:g} s)"}
    else:
        try:
            dtype = torch.bfloat16 if best["precision"] == "bf16" else torch.float32
            fmt = _format(kind, best["channels_last"])
            net = base.to(dev, dtype=dtype).to(memory_format=fmt)
            torch._dynamo.reset()
            cnet = torch.compile(net, dynamic=False)
            bs = best["batch_size"]
            x = torch.rand((bs, *shape), device=dev, dtype=dtype).contiguous(memory_format=fmt)
            t = time.perf_counter()
            with torch.inference_mode():
                cnet(x)
            clock.sync()
            compile_s = time.perf_counter() - t
            med, ts = _infer_once(clock, cnet, x, sz, sz["repeats"])
            rate = bs / med
            out["compiled"] = {"variant": best["variant"], "batch_size": bs, "compile_s": compile_s, "median_s": med,
                               "runs_s": ts, "samples_per_s": rate, "patterns_per_s": rate * per_sample,
                               "speedup_vs_eager": rate / best["samples_per_s"]}
            clock.log(f"inference {name:18s} compiled {best['variant']:13s}: {rate * per_sample:12.1f} patterns/s "
                      f"(compile {compile_s:.1f} s)")
            if rate > best["samples_per_s"]:
                best = {**best, "compiled": True, "samples_per_s": rate, "patterns_per_s": rate * per_sample}
            del x, cnet
        except Exception as exc:  # noqa: BLE001
            out["compiled"] = {"error": _err(exc)}
            clock.log(f"inference {name} compile: {_err(exc)}")
        finally:
            _free_memory()
    if best is not None:
        best["reaches_100k_patterns_per_s"] = best["patterns_per_s"] >= TARGET_PATTERNS_PER_S
        if kind == "3d":
            best["reaches_100k_stacks_per_s"] = best["samples_per_s"] >= TARGET_PATTERNS_PER_S
    out["best"] = best
    return out


def section_inference(clock: Clock, rec: dict, sz: dict, args) -> None:
    models = _model_list(args)
    compile_on = {"on": True, "off": False}.get(args.compile, clock.device.type == "cuda")
    rec["setup"] = {"batch_sizes": sz["infer_batches"], "pattern_size": sz["pattern_size"], "repeats": sz["repeats"],
                    "variants": "fp32/bf16 weights x contiguous/channels-last, eager; torch.compile of the best",
                    "compile": compile_on, "data": "uniform random, on the device", "mode": "eval, inference_mode",
                    "target_patterns_per_s": TARGET_PATTERNS_PER_S,
                    "patterns": "a 3D stack counts as `positions` patterns"}
    rows = rec.setdefault("models", {})
    head = rec.setdefault("headline", {})
    for k, name in enumerate(models):
        if clock.left() <= 0:
            rows[name] = {"skipped": "section time box"}
            continue
        model_deadline = time.perf_counter() + clock.left() / (len(models) - k)
        try:
            rows[name] = r = infer_model(clock, name, sz, compile_on, model_deadline)
            if r.get("best"):
                head[f"{name}_best_patterns_per_s"] = r["best"]["patterns_per_s"]
        except Exception as exc:  # noqa: BLE001
            rows[name] = {"error": _err(exc), "traceback": traceback.format_exc(limit=6)}
            clock.log(f"inference {name}: {_err(exc)}")
        _free_memory()
        clock.save()
    rec["reaches_100k_patterns_per_s"] = {m: r["best"]["reaches_100k_patterns_per_s"] for m, r in rows.items()
                                          if isinstance(r, dict) and r.get("best")}
    if not head:
        raise RuntimeError("no model ran: " + "; ".join(f"{m}: {v.get('error', v.get('skipped'))}"
                                                        for m, v in rows.items()))


RUNNERS = {"multislice": section_multislice, "campaign": section_campaign, "training": section_training,
           "inference": section_inference}


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: a quick check that everything runs (CPU)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="total time budget; later sections are skipped")
    ap.add_argument("--only", default=None, help=f"comma-separated sections out of {','.join(SECTIONS)}")
    ap.add_argument("--models", default=None, help="comma-separated networks for training and inference "
                    f"(default: {','.join(MODEL_ORDER)}; --tiny: {','.join(TINY_MODELS)})")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="torch.compile in the inference section (auto: on CUDA only)")
    ap.add_argument("--no-abtem", action="store_true", help="skip the abTEM comparison")
    ap.add_argument("--out", default=str(OUT), help="JSON written after every section")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {unknown}; allowed: {','.join(SECTIONS)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {"schema": SCHEMA, "argv": list(sys.argv[1:] if argv is None else argv),
               "args": vars(args), "budget_s": args.budget_s, "complete": False, "sections": {}}
    clock = Clock(args.budget_s, out, results, device)
    try:
        results["environment"] = environment(device)
    except Exception as exc:  # noqa: BLE001
        results["environment"] = {"error": _err(exc), "date": _now(), "torch": torch.__version__}
    if device.type == "cuda" and not torch.cuda.is_available():
        results["error"] = f"device {device} requested but CUDA is not available"
    sz = sizes(args.tiny, device.type == "cuda")
    results["sizes"] = sz
    for name in SECTIONS:
        results["sections"][name] = {"status": "pending"}
    clock.save()
    clock.log(f"gpu_suite on {results['environment'].get('device_name', device)} ({device}), "
              f"budget {args.budget_s:g} s, tiny={args.tiny}; writing {out}")
    for i, name in enumerate(SECTIONS):
        rec = {"status": "running", "started": _now(), "loadavg_start": _load()}
        results["sections"][name] = rec
        if name not in only:
            results["sections"][name] = {"status": "skipped", "skipped": "not selected (--only)"}
            continue
        if "error" in results:
            results["sections"][name] = {"status": "skipped", "skipped": results["error"]}
            continue
        left = clock.global_left()
        if left <= 0:
            results["sections"][name] = {"status": "skipped", "skipped": f"budget of {args.budget_s:g} s spent"}
            clock.log(f"{name}: skipped (budget spent)")
            clock.save()
            continue
        todo = [s for s in SECTIONS[i:] if s in only]
        share = SHARES[name] / sum(SHARES[s] for s in todo)
        clock.section_deadline = time.perf_counter() + left * share
        rec["time_box_s"] = left * share
        clock.log(f"{name}: start (time box {left * share:.0f} s)")
        t = time.perf_counter()
        try:
            RUNNERS[name](clock, rec, sz, args)
            rec["status"] = "ok"
        except Exception as exc:  # noqa: BLE001
            rec["status"] = "error"
            rec["error"] = _err(exc)
            rec["traceback"] = traceback.format_exc(limit=8)
            clock.log(f"{name}: error {_err(exc)}")
        finally:
            _free_memory()
        rec["wall_s"] = time.perf_counter() - t
        rec["loadavg_end"] = _load()
        results["summary"] = {s: results["sections"][s].get("headline", {}) for s in SECTIONS
                              if results["sections"][s].get("headline")}
        goal = results["sections"]["inference"].get("reaches_100k_patterns_per_s")
        if goal:
            results["summary"]["inference_reaches_100k_patterns_per_s"] = goal
        clock.save()
        clock.log(f"{name}: {rec['status']} in {rec['wall_s']:.1f} s")
    results["complete"] = True
    results["environment"]["loadavg_end"] = _load()
    clock.save()
    clock.log(f"done in {results['wall_s']:.1f} s; wrote {out}")
    return results


if __name__ == "__main__":
    main()
