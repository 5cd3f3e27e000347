"""Random augmentation of training examples: stacks of CBED patterns along a line scan.

An example is a float tensor of shape ``(P, ky, kx)`` (batched ``(B, P, ky, kx)``):
``P`` patterns recorded at successive probe positions, each pattern's intensity
a fraction of the incident beam (sums to about 1). :class:`Augmenter` applies, in
this order and with parameters drawn per example:

1. position jitter: a sub-step shift along ``P`` (linear interpolation, edges clamped);
2. rotation of every pattern about its zero-frequency pixel ``(ky // 2, kx // 2)``;
3. Gaussian detector blur (separable, intensity-conserving away from the edges);
4. shot noise: ``Poisson(x * dose) / dose`` so the scale stays a beam fraction.

Angle convention: a positive angle turns a pattern counter-clockwise as displayed
with row 0 (``ky``) at the top and column 0 (``kx``) at the left, as
``torch.rot90(x, 1, dims=(-2, -1))`` and ``matplotlib.pyplot.imshow`` show it.

Every random number comes from the ``torch.Generator`` passed in: the same seed
gives the same bytes on the same device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from inverscope.core.config import StrictModel

ORDER = ("position_jitter", "rotation", "blur", "poisson_noise")


class AugmentConfig(StrictModel):
    """Ranges of the random augmentations; a zero (or null dose) turns one off."""

    dose_e_per_pattern: tuple[float, float] | None = Field((1e4, 1e6), description="(min, max) electrons per "
                                                           "pattern, drawn log-uniformly; null = no noise")
    rotation_deg: float = Field(2.0, ge=0, le=180, allow_inf_nan=False, description="max |rotation| [deg]; 0 = off")
    position_jitter: float = Field(0.0, ge=0, le=1, allow_inf_nan=False,
                                   description="max shift along the positions axis [fraction of one step]; 0 = off")
    blur_sigma_px: float = Field(0.0, ge=0, allow_inf_nan=False,
                                 description="max Gaussian detector blur sigma [pixels]; 0 = off")

    @field_validator("dose_e_per_pattern")
    @classmethod
    def _dose_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is None:
            return v
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi > 0):
            raise ValueError("both doses must be finite and > 0 [electrons per pattern] (or null for no noise)")
        if lo > hi:
            raise ValueError("give (min, max) with min <= max [electrons per pattern]")
        return v


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """View ``x`` as (B, P, ky, kx) float32; the flag says whether a batch axis was added."""
    if x.ndim not in (3, 4):
        raise ValueError(f"x: got shape {tuple(x.shape)}; expected (P, ky, kx) or (B, P, ky, kx)")
    x = x.to(torch.float32)
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def jitter_positions(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each example along its positions axis by a fraction of a step.

    Parameters
    ----------
    x : torch.Tensor
        (B, P, ky, kx) patterns.
    shifts : torch.Tensor
        (B,) shifts [steps]; output pattern ``p`` is ``x`` interpolated linearly at
        position ``p + shift``, positions beyond the ends clamped to the end pattern.

    Returns
    -------
    torch.Tensor
        (B, P, ky, kx); a zero shift returns the patterns unchanged.
    """
    n_pos = x.shape[1]
    pos = torch.arange(n_pos, dtype=torch.float64) + shifts.detach().cpu().to(torch.float64)[:, None]
    lo = torch.floor(pos)
    frac = (pos - lo).to(x.dtype).to(x.device)[:, :, None, None]
    i0, i1 = ((lo.long() + k).clamp(0, n_pos - 1).to(x.device)[:, :, None, None] for k in (0, 1))
    return (1 - frac) * torch.take_along_dim(x, i0, dim=1) + frac * torch.take_along_dim(x, i1, dim=1)


def _rotation_theta(angles_deg: torch.Tensor, ky: int, kx: int) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices rotating about pixel (ky // 2, kx // 2).

    In pixel offsets (d_col, d_row) from the centre, the output at ``d`` samples the
    input at ``A d`` with ``A = [[cos, -sin], [sin, cos]]`` (counter-clockwise as
    displayed with row 0 on top). With ``align_corners=False`` pixel ``i`` of ``n``
    sits at normalised ``u = (2 i + 1) / n - 1``, i.e. pixel ``= S u + o`` with
    ``S = n / 2`` and ``o = (n - 1) / 2``; so ``theta = [S^-1 A S | S^-1 (A - I)(o - c)]``.
    """
    a = torch.deg2rad(angles_deg.detach().cpu().to(torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    scale = torch.tensor([kx / 2, ky / 2], dtype=torch.float64)
    offset = torch.tensor([(kx - 1) / 2 - kx // 2, (ky - 1) / 2 - ky // 2], dtype=torch.float64)
    lin = rot * scale[None, None, :] / scale[None, :, None]
    shift = ((rot - torch.eye(2, dtype=torch.float64)) @ offset) / scale
    return torch.cat([lin, shift[:, :, None]], dim=2)


def rotate(x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate every pattern of each example about its pixel ``(ky // 2, kx // 2)``.

    Parameters
    ----------
    x : torch.Tensor
        (B, P, ky, kx) patterns (float).
    angles_deg : torch.Tensor
        (B,) angles [deg], one per example; positive = counter-clockwise as
        displayed with row 0 at the top (``+90`` matches ``torch.rot90(x, 1, (-2, -1))``).

    Returns
    -------
    torch.Tensor
        (B, P, ky, kx), bilinear interpolation, zero outside the detector.
    """
    b, p, ky, kx = x.shape
    theta = _rotation_theta(angles_deg, ky, kx).to(dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, [b, p, ky, kx], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gaussian_kernels(sigmas_px: torch.Tensor) -> torch.Tensor:
    """(B, 2 r + 1) normalised 1D Gaussians, r = ceil(4 max sigma); sigma 0 gives a delta."""
    s = sigmas_px.detach().cpu().to(torch.float64)
    radius = max(1, math.ceil(4 * float(s.max()))) if s.numel() else 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t[None, :] / s.clamp_min(1e-6)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur(x: torch.Tensor, sigmas_px: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of every pattern, one sigma per example.

    Parameters
    ----------
    x : torch.Tensor
        (B, P, ky, kx) patterns.
    sigmas_px : torch.Tensor
        (B,) standard deviations [pixels]; 0 leaves an example unchanged.

    Returns
    -------
    torch.Tensor
        (B, P, ky, kx); zero padding, so intensity is conserved away from the edges.
    """
    b, p, ky, kx = x.shape
    k = _gaussian_kernels(sigmas_px).to(dtype=x.dtype, device=x.device)
    k = k.repeat_interleave(p, dim=0)[:, None, :]  # (B*P, 1, K)
    r = k.shape[-1] // 2
    y = x.reshape(1, b * p, ky, kx)
    y = F.conv2d(y, k[:, :, :, None], padding=(r, 0), groups=b * p)
    y = F.conv2d(y, k[:, :, None, :], padding=(0, r), groups=b * p)
    return y.reshape(b, p, ky, kx)


def _generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """``generator`` if it lives on ``device``, else one there seeded from it."""
    if torch.device(generator.device) == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def poisson_noise(x: torch.Tensor, doses: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shot noise: ``Poisson(x * dose) / dose`` per example.

    Parameters
    ----------
    x : torch.Tensor
        (B, P, ky, kx) patterns [fraction of the beam]; negatives count as 0.
    doses : torch.Tensor
        (B,) electrons per pattern.
    generator : torch.Generator
        Source of the counts (a generator on another device seeds one on ``x``'s).

    Returns
    -------
    torch.Tensor
        (B, P, ky, kx) counts divided by the dose [fraction of the beam].
    """
    d = doses.detach().to(dtype=x.dtype, device=x.device)[:, None, None, None]
    counts = torch.poisson((x * d).clamp_min(0), generator=_generator_on(x.device, generator))
    return counts / d


class Augmenter:
    """Apply the augmentations of an :class:`AugmentConfig` to batches of examples.

    Parameters
    ----------
    config : AugmentConfig
        Ranges of the augmentations; only those not off draw random numbers.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config

    @staticmethod
    def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        return lo + (hi - lo) * u

    def _doses(self, n: int, generator: torch.Generator) -> torch.Tensor:
        lo, hi = self.config.dose_e_per_pattern
        if lo == hi:
            return torch.full((n,), lo, dtype=torch.float64)
        return torch.exp(self._uniform(n, math.log(lo), math.log(hi), generator))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``x`` ((B, P, ky, kx) or (P, ky, kx)) with randomness from ``generator`` only.

        Returns a new float32 tensor of the same shape on the same device; ``x`` is
        not modified.
        """
        cfg = self.config
        y, added = _as_batch(x)
        n = y.shape[0]
        if cfg.position_jitter > 0:
            y = jitter_positions(y, self._uniform(n, -cfg.position_jitter, cfg.position_jitter, generator))
        if cfg.rotation_deg > 0:
            y = rotate(y, self._uniform(n, -cfg.rotation_deg, cfg.rotation_deg, generator))
        if cfg.blur_sigma_px > 0:
            y = blur(y, self._uniform(n, 0.0, cfg.blur_sigma_px, generator))
        if cfg.dose_e_per_pattern is not None:
            y = poisson_noise(y, self._doses(n, generator), generator)
        y = y.squeeze(0) if added else y
        return y.clone() if y.data_ptr() == x.data_ptr() else y

    def describe(self) -> dict:
        """JSON-ready summary for reports: settings, units and the order applied."""
        cfg = self.config
        dose = None if cfg.dose_e_per_pattern is None else list(cfg.dose_e_per_pattern)
        return {"order": list(ORDER), "dose_e_per_pattern": dose, "rotation_deg": cfg.rotation_deg,
                "position_jitter_steps": cfg.position_jitter, "blur_sigma_px": cfg.blur_sigma_px,
                "sampling": "per example: dose log-uniform in range, angle/shift uniform in [-max, max], "
                            "blur sigma uniform in [0, max]",
                "rotation_convention": "+ = counter-clockwise shown with row 0 on top, about pixel (ky//2, kx//2)"}
