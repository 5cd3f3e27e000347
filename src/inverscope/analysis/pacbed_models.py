"""Reading thickness and tilt from registered PACBEDs: camera-like training examples drawn from a
library, the network input transform, training, and prediction with MC-dropout uncertainty.

Training examples are library patterns put through what a camera and an imperfect registration
do to them, directly on the network's grid (:func:`draw_examples`): a random operation of the
4mm point group (the registration fixes the crystal axes, not which equivalent direction is
which), residual centre, rotation and scale errors, a dose, Poisson noise, detector blur, a
background, intensity scale, clipping, 8-bit quantization and JPEG. Targets are the thickness
[nm] and the tilt folded into the octant 0 <= ty <= tx [mrad], which every 4mm operation leaves
unchanged. The input transform (:func:`to_input`) divides by the mean, takes the square root
(variance-stabilised counts) and standardizes per pixel with statistics of the training set.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from inverscope.analysis.template_matching import OPS_4MM
from inverscope.core.config import StrictModel
from inverscope.datasets.degrade import CameraModel, CameraRanges, degrade


class ExampleSpec(StrictModel):
    """What training examples vary over (residual registration errors and the camera)."""

    shift_px: float = Field(0.7, ge=0, description="max residual centre error per axis [network px]")
    rotation_deg: float = Field(1.0, ge=0, description="max residual rotation [deg]")
    scale_fraction: float = Field(0.01, ge=0, lt=0.5, description="max residual relative scale error")
    dose_e_per_pattern: tuple[float, float] = Field((3e4, 3e6), description="(min, max), log-uniform")
    blur_sigma_px: tuple[float, float] = Field((0.0, 1.0), description="(min, max) [network px]")
    background_fraction: tuple[float, float] = Field((0.0, 0.05), description="offset as a fraction of the peak")
    clip_probability: float = Field(0.5, ge=0, le=1, description="share of examples clipped")
    clip_fraction: tuple[float, float] = Field((0.3, 0.9), description="clip level as a fraction of the peak")
    jpeg_probability: float = Field(0.5, ge=0, le=1, description="share of examples 8-bit + JPEG")
    jpeg_quality: tuple[int, int] = Field((60, 95), description="(min, max) JPEG quality")
    through_registration: float = Field(0.0, ge=0, le=1, description="share of examples made as raw frames "
                                        "(`frames`) and registered, so the network learns registration's own errors")
    frames: CameraRanges = Field(default_factory=lambda: CameraRanges.model_validate({
        "base": {"frame_shape": [256, 256], "peak_counts": 230, "saturation_counts": 255, "bit_depth": 8,
                 "jpeg_quality": 85, "background_length_px": 96},
        "centre_shift_px": 30, "rotation_deg": [0, 360], "mrad_per_px": [0.4, 0.8],
        "dose_e_per_pattern": [3e4, 1e7], "blur_sigma_px": [0.0, 1.5], "background_counts": [0, 15],
        "background_smooth_counts": [0, 10]}), description="raw-frame cameras for examples through registration")


def _camera(spec: ExampleSpec, shape: tuple[int, int], mrad: float, rng: np.random.Generator) -> CameraModel:
    centre = ((shape[0] - 1) / 2 + rng.uniform(-spec.shift_px, spec.shift_px),
              (shape[1] - 1) / 2 + rng.uniform(-spec.shift_px, spec.shift_px))
    peak = 200.0
    jpeg = rng.random() < spec.jpeg_probability
    clip = peak * rng.uniform(*spec.clip_fraction) if rng.random() < spec.clip_probability else None
    return CameraModel(frame_shape=shape, mrad_per_px=mrad * (1 + rng.uniform(-spec.scale_fraction, spec.scale_fraction)),
                       centre_px=centre, rotation_deg=float(rng.uniform(-spec.rotation_deg, spec.rotation_deg)),
                       dose_e_per_pattern=float(np.exp(rng.uniform(*np.log(spec.dose_e_per_pattern)))),
                       blur_sigma_px=float(rng.uniform(*spec.blur_sigma_px)), peak_counts=peak,
                       background_counts=peak * float(rng.uniform(*spec.background_fraction)),
                       saturation_counts=clip,  # below the 8-bit ceiling: peak 200, clip <= 0.9 x peak
                       bit_depth=8 if jpeg else None,
                       jpeg_quality=int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)) if jpeg else None)


def fold_tilt(tilt_mrad: np.ndarray) -> np.ndarray:
    """Tilts (..., 2) folded into the octant 0 <= ty <= tx (the 4mm orbit's representative)."""
    t = np.abs(np.asarray(tilt_mrad, dtype=float))
    return np.stack([t.max(-1), t.min(-1)], -1)


def draw_examples(patterns: np.ndarray, tilts_mrad: np.ndarray, thicknesses_angstrom: np.ndarray,
                  sampling_mrad: float, out_shape: tuple[int, int], out_mrad: float, n: int, spec: ExampleSpec,
                  rng: np.random.Generator, thickness_range_nm: tuple[float, float] | None = None,
                  register=None):
    """`n` camera-like examples on the network grid from library `patterns` (tilts, thicknesses, k, k).

    A share ``spec.through_registration`` of them is made as a raw frame (``spec.frames``) and put
    on the grid by ``register(frame) -> pattern`` (the registration used on measured data; frames
    it refuses are drawn again); the rest directly on the grid with small residual errors.

    Returns
    -------
    x : np.ndarray
        (n, *out_shape) float32 frames [counts].
    y : np.ndarray
        (n, 3) float32 targets: thickness [nm], folded tilt (tx, ty) [mrad].
    """
    from inverscope.core.errors import InverscopeError

    z_ok = np.arange(len(thicknesses_angstrom))
    if thickness_range_nm is not None:
        t_nm = np.asarray(thicknesses_angstrom) / 10
        z_ok = np.flatnonzero((t_nm >= thickness_range_nm[0]) & (t_nm <= thickness_range_nm[1]))
    x = np.empty((n, *out_shape), np.float32)
    y = np.empty((n, 3), np.float32)
    i = 0
    while i < n:
        ti, zi = int(rng.integers(len(tilts_mrad))), int(rng.choice(z_ok))
        p = np.ascontiguousarray(OPS_4MM[int(rng.integers(8))](patterns[ti, zi]))
        if register is not None and rng.random() < spec.through_registration:
            frame = degrade(p, spec.frames.draw(rng), rng, sampling_mrad=sampling_mrad)[0]
            try:
                x[i] = register(frame)
            except InverscopeError:
                continue
        else:
            x[i] = degrade(p, _camera(spec, out_shape, out_mrad, rng), rng, sampling_mrad=sampling_mrad)[0]
        y[i] = (thicknesses_angstrom[zi] / 10, *fold_tilt(tilts_mrad[ti]))
        i += 1
    return x, y


def to_input(frames: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """Network input of frames (n, k, k): sqrt of the frame over its mean, standardized per pixel.

    Without `mean`/`std` they are computed from `frames` (the training set) and returned too.
    """
    f = np.clip(np.asarray(frames, dtype=np.float32), 0, None)
    f = np.sqrt(f / (f.mean(axis=(-1, -2), keepdims=True) + 1e-12))
    if mean is None:
        mean, std = f.mean(0), f.std(0) + 1e-3
    return ((f - mean) / std).astype(np.float32), mean, std


class PACBEDTrainConfig(StrictModel):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(20, ge=1)
    seed: int = 0
    target_scale: tuple[float, float, float] = (100.0, 4.0, 4.0)  # nm, mrad, mrad: targets divided by these


def train_regressor(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    cfg: PACBEDTrainConfig, log=None) -> dict:
    """AdamW with a cosine schedule on scaled targets; keeps the weights of the best validation epoch.

    Returns the per-epoch history and the wall time [s].
    """
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    scale = torch.tensor(cfg.target_scale, dtype=torch.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y) / scale
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val) / scale
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, -(-len(xt) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    history, best, best_state, t0 = [], np.inf, None, time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=g)
        total = 0.0
        for s in range(0, len(xt), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss = torch.nn.functional.mse_loss(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(net(xv), yv))
        history.append({"epoch": epoch, "train_loss": total / len(xt), "val_loss": val})
        if val < best:
            best, best_state = val, {k: v.detach().clone() for k, v in net.state_dict().items()}
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: train {total / len(xt):.4f}, validation {val:.4f}")
    net.load_state_dict(best_state)
    net.eval()
    return {"history": history, "wall_s": time.perf_counter() - t0, "best_val_loss": best}


def predict_with_uncertainty(net: torch.nn.Module, x: np.ndarray, target_scale, passes: int = 16,
                             seed: int = 0, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (n, outputs) over `passes` forward passes with dropout on
    (batch norm in inference mode); `passes` 1 gives the deterministic prediction and zero spread."""
    torch.manual_seed(seed)
    net.eval()
    drop = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    scale = np.asarray(target_scale, dtype=np.float32)
    outs = []
    try:
        for m in drop:
            m.train(passes > 1)
        with torch.no_grad():
            for _ in range(max(1, passes)):
                outs.append(np.concatenate([net(torch.from_numpy(x[i:i + batch_size])).numpy()
                                            for i in range(0, len(x), batch_size)]) * scale)
    finally:
        for m in drop:
            m.train(False)
    stack = np.stack(outs)
    return stack.mean(0), stack.std(0)


__all__ = ["ExampleSpec", "PACBEDTrainConfig", "draw_examples", "fold_tilt", "to_input", "train_regressor",
           "predict_with_uncertainty"]
