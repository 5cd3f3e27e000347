"""Incoherent (HAADF) STEM image model, batched in torch.

In the incoherent approximation a HAADF image is the effective probe intensity convolved
with an object function of point columns:

``I(r) = sum_j w_j P(r - r_j)``,  ``w_j = S(u_j)``,  ``u_j = (sum_{i in column j} Z_i^n) * N_j^(gamma - 1)``

* ``P`` is ``|psi(r)|^2`` of ``Probe`` (same
  aperture, defocus and aberrations), optionally convolved with a Gaussian source of FWHM
  ``source_fwhm_angstrom`` (the effective source size), normalized to sum 1;
* ``n`` is the Z exponent (1.6 - 2.0 for HAADF; Rutherford would be 2);
* ``gamma`` is a crude thickness exponent: ``gamma = 1`` makes the intensity proportional to
  the number of atoms ``N_j`` in the column, ``gamma < 1`` makes it sublinear (a stand-in for
  channelling saturation);
* ``S`` is the identity, or with ``saturation_weight = W > 0`` the saturating column law
  ``S(u) = W (1 - exp(-u / W))``: linear in the column's ``sum Z^n`` while it is small against
  ``W``, levelling off towards ``W`` as it grows. Heavy columns saturate first, so the contrast
  between a heavy and a light column falls with thickness, which is what frozen-phonon
  multislice shows (SrTiO3 [001] at 200 kV: TiO/Sr rises from 0.50 at 10 nm to 0.65 at 30 nm;
  ``benchmarks/incoherent_vs_multislice.py`` fits ``n`` and ``W`` to it). ``W`` is in the
  units of ``z_weight`` (so it depends on ``n``). Still no dynamical effects beyond that, no
  cross-talk between columns, no TDS background: use multislice for quantitative work.

Pixel convention: an image is ``(H, W)`` = (rows, cols); pixel ``(row i, col j)`` is centred at
``x = j * pixel_size``, ``y = i * pixel_size`` [Å] from the image origin; pixel coordinates
``x_px = x / pixel_size`` are measured to pixel centres. The images are *point samples* of
``I(r)`` (a STEM pixel is one probe position).

Rendering: each column is splatted bilinearly onto the grid (the splat keeps the column's total
weight and its centroid exactly) and convolved with ``P`` by FFT (periodic: keep columns a few
probe widths away from the border or crop afterwards). Bilinear splatting blurs sub-pixel
positions by up to 0.5 px^2 of variance; ``oversample = m`` renders on an m-times finer grid and
keeps every m-th sample, which shrinks that blur m^2 times.

ABF (``mode="abf"``): a crude annular-bright-field-like contrast ``1 - c * I_w(r) / peak`` with
light-atom-friendly weights (pass a small Z exponent, e.g. 0.3 - 0.6): dark columns on a bright
background whose depth is ``abf_contrast`` for the strongest column. It ignores the phase
contrast, the defocus and tilt sensitivity and the characteristic dark-ring shape of real ABF:
use it only for robustness training, not for quantitative contrast.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from inverscope.core.errors import InverscopeError, field_error
from inverscope.core.grid import Grid, next_fft_size
from inverscope.physics.multislice.probe import Probe

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _check_sampling(probe: Probe, pixel_size_angstrom: float) -> None:
    if not (pixel_size_angstrom > 0 and math.isfinite(pixel_size_angstrom)):
        raise field_error("pixel_size_angstrom", pixel_size_angstrom, "must be > 0 [Å]")
    limit = probe.wavelength_angstrom / (2 * probe.semiangle_mrad * 1e-3)
    if pixel_size_angstrom >= limit:
        raise InverscopeError(f"pixel_size_angstrom: got {pixel_size_angstrom:.4g}; the "
                              f"{probe.semiangle_mrad:g} mrad aperture needs pixels smaller than {limit:.4g} Å "
                              "(lambda / (2 alpha)); use oversample or a finer pixel")


def probe_intensity(probe: Probe, shape: tuple[int, int], pixel_size_angstrom: float,
                    source_fwhm_angstrom: float = 0.0, device="cpu", dtype=torch.float32,
                    fourier: bool = False) -> torch.Tensor:
    """Effective probe intensity on an image grid, centred on pixel (0, 0) (FFT origin).

    Parameters
    ----------
    probe : Probe
        Energy, semiangle, defocus and aberrations.
    shape : (int, int)
        (H, W) [px].
    pixel_size_angstrom : float
        Pixel size [Å]; must be below ``lambda / (2 alpha)`` so the aperture fits the grid.
    source_fwhm_angstrom : float
        FWHM of the Gaussian effective source [Å] (0: coherent point source).

    fourier : bool
        Return ``rfft2`` of the intensity (H, W // 2 + 1) instead (what convolution needs).

    Returns
    -------
    torch.Tensor (H, W), real, sums to 1; row = y, column = x, periodic.
    """
    _check_sampling(probe, pixel_size_angstrom)
    if not (source_fwhm_angstrom >= 0):
        raise field_error("source_fwhm_angstrom", source_fwhm_angstrom, "must be >= 0 [Å]")
    h, w = int(shape[0]), int(shape[1])
    p = float(pixel_size_angstrom)
    grid = Grid((w * p, h * p), (w, h))  # Grid axis 0 is x
    psi = torch.fft.ifft2(probe.fourier_array(grid, device=device, dtype=dtype))
    inten = (psi.real ** 2 + psi.imag ** 2).T.contiguous()  # (H, W)
    spec = torch.fft.rfft2(inten)
    if source_fwhm_angstrom > 0:
        s = source_fwhm_angstrom / FWHM_PER_SIGMA
        ky = torch.fft.fftfreq(h, p, device=device, dtype=dtype)
        kx = torch.fft.rfftfreq(w, p, device=device, dtype=dtype)
        spec = spec * torch.exp(-2 * math.pi ** 2 * s ** 2 * (ky[:, None] ** 2 + kx[None] ** 2))
    spec = spec / spec[0, 0].real
    if fourier:
        return spec
    return torch.fft.irfft2(spec, s=(h, w))


def probe_fwhm_angstrom(probe: Probe, source_fwhm_angstrom: float = 0.0, samples_per_resolution: int = 12) -> float:
    """FWHM [Å] of the effective probe intensity, measured on a fine grid.

    The FWHM is that of a disc with the area where the intensity is at least half its
    maximum (``2 sqrt(A / pi)``): the usual FWHM for a round probe, a mean width otherwise.
    For an aberration-free probe it is about ``0.51 lambda / alpha``.
    """
    lam = probe.wavelength_angstrom
    res = lam / (probe.semiangle_mrad * 1e-3)
    p = res / samples_per_resolution
    c10 = abs(probe.coefficients().get("C10", 0.0))
    extent = 16 * res + 8 * c10 * probe.semiangle_mrad * 1e-3 + 6 * source_fwhm_angstrom
    n = next_fft_size(int(math.ceil(extent / p)))
    inten = probe_intensity(probe, (n, n), p, source_fwhm_angstrom, dtype=torch.float64)
    area = float((inten >= 0.5 * inten.max()).sum()) * p * p
    return 2.0 * math.sqrt(area / math.pi)


def splat_bilinear(x_px: torch.Tensor, y_px: torch.Tensor, weights: torch.Tensor, batch_index: torch.Tensor,
                   batch: int, shape: tuple[int, int]) -> torch.Tensor:
    """Spread point weights onto (batch, H, W) grids with bilinear weights (periodic wrap).

    Parameters
    ----------
    x_px, y_px : torch.Tensor (N,)
        Positions in pixel coordinates (column, row).
    weights : torch.Tensor (N,)
    batch_index : torch.Tensor (N,) int
        Image each point belongs to.
    """
    h, w = int(shape[0]), int(shape[1])
    out = torch.zeros(batch * h * w, dtype=weights.dtype, device=weights.device)
    x0 = torch.floor(x_px)
    y0 = torch.floor(y_px)
    fx = (x_px - x0).to(weights.dtype)
    fy = (y_px - y0).to(weights.dtype)
    x0 = x0.long()
    y0 = y0.long()
    base = batch_index.long() * (h * w)
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            idx = base + ((y0 + dy) % h) * w + (x0 + dx) % w
            out.index_add_(0, idx, weights * wx * wy)
    return out.view(batch, h, w)


def _per_image(value, batch: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise field_error(name, f"{len(value)} values", f"give one value or {batch} (one per image)")
        return list(value)
    return [value] * batch


def render_incoherent(columns: Sequence[dict], shape: tuple[int, int], pixel_size_angstrom, probe,
                      source_fwhm_angstrom=0.0, thickness_exponent=1.0, saturation_weight=0.0,
                      origin_angstrom=(0.0, 0.0),
                      mode: str = "haadf", abf_contrast=0.3, oversample: int = 1, device="cpu",
                      dtype=torch.float32) -> tuple[torch.Tensor, list[dict]]:
    """Render a batch of incoherent images, one per column table.

    Parameters
    ----------
    columns : sequence of dict
        Per image, a column table as ``projected_columns``
        returns it: ``x``, ``y`` [Å], ``z_weight`` (sum of Z^n; choose n there) and ``n_atoms``.
    shape : (int, int)
        (H, W) of every image [px].
    pixel_size_angstrom : float or sequence
        True pixel size per image [Å].
    probe : Probe or sequence of Probe
        Energy [eV], convergence semiangle [mrad], defocus and aberrations of the probe whose
        intensity ``|psi(r)|^2`` images each column.
    source_fwhm_angstrom : float or sequence
        Gaussian source FWHM per image [Å].
    thickness_exponent : float or sequence
        gamma: column weight ``z_weight * n_atoms^(gamma - 1)``.
    saturation_weight : float or sequence
        W of the saturating column law ``W (1 - exp(-u / W))`` (units of ``z_weight``);
        0 (default) keeps the column weight linear.
    origin_angstrom : (float, float) or sequence of them
        Position [Å] of pixel (0, 0) in the structure's coordinates.
    mode : "haadf" or "abf"
        Bright columns on a dark background (HAADF) or the crude ABF-like contrast of the
        module docstring.
    abf_contrast : float or sequence
        Depth of the darkest column in ABF mode (fraction of the background 1).
    oversample : int
        Render on an `oversample` times finer grid and keep every `oversample`-th sample.

    Returns
    -------
    images : torch.Tensor (B, H, W)
        HAADF: intensity in units of the column weight (a column of weight 1 integrates to 1
        over the image area in pixels); ABF: 1 on vacuum.
    params : list of dict
        Per image: pixel size, probe settings, source size, exponents, mode, oversample.

    Examples
    --------
    Two columns of weight 1 and 2 on a 32 x 32 image at 0.4 Å/px; a column of weight w
    integrates to w:

    >>> import inverscope as isc
    >>> columns = [{"x": [4.0, 8.0], "y": [4.0, 8.0], "z_weight": [1.0, 2.0], "n_atoms": [1, 1]}]
    >>> images, params = isc.render_incoherent(columns, (32, 32), 0.4, isc.Probe(200e3, 20.0))
    >>> images.shape, round(float(images.sum()), 3)
    (torch.Size([1, 32, 32]), 3.0)
    >>> params[0]["pixel_size_angstrom"], params[0]["n_columns"], params[0]["mode"]
    (0.4, 2, 'haadf')
    """
    if mode not in ("haadf", "abf"):
        raise field_error("mode", mode, "allowed: 'haadf', 'abf'")
    if int(oversample) != oversample or oversample < 1:
        raise field_error("oversample", oversample, "a whole number >= 1")
    m = int(oversample)
    b = len(columns)
    if b == 0:
        raise field_error("columns", "[]", "need at least one image")
    h, w = int(shape[0]), int(shape[1])
    if h < 2 or w < 2:
        raise field_error("shape", shape, "at least 2 x 2 px")
    px = [float(v) for v in _per_image(pixel_size_angstrom, b, "pixel_size_angstrom")]
    probes = _per_image(probe, b, "probe")
    src = [float(v) for v in _per_image(source_fwhm_angstrom, b, "source_fwhm_angstrom")]
    gam = [float(v) for v in _per_image(thickness_exponent, b, "thickness_exponent")]
    abf = [float(v) for v in _per_image(abf_contrast, b, "abf_contrast")]
    sat = [float(v) for v in _per_image(saturation_weight, b, "saturation_weight")]
    for v in sat:
        if not (v >= 0 and math.isfinite(v)):
            raise field_error("saturation_weight", v, "must be >= 0 (0: no saturation), in units of z_weight")
    origins = origin_angstrom if (isinstance(origin_angstrom, (list, tuple)) and len(origin_angstrom) == b
                                  and np.ndim(origin_angstrom[0]) == 1) else [origin_angstrom] * b
    hm, wm = h * m, w * m
    kernels = torch.empty((b, hm, wm // 2 + 1), dtype=torch.complex64 if dtype == torch.float32 else torch.complex128,
                          device=device)
    xs, ys, ws, bs, params = [], [], [], [], []
    for i, col in enumerate(columns):
        pf = px[i] / m
        kernels[i] = probe_intensity(probes[i], (hm, wm), pf, src[i], device=device, dtype=dtype, fourier=True)
        zw = np.asarray(col["z_weight"], float)
        na = np.maximum(np.asarray(col.get("n_atoms", np.ones(len(zw))), float), 1.0)
        wt = zw * na ** (gam[i] - 1.0)
        if sat[i] > 0:
            wt = sat[i] * -np.expm1(-wt / sat[i])
        ox, oy = (float(v) for v in origins[i])
        xs.append((np.asarray(col["x"], float) - ox) / pf)
        ys.append((np.asarray(col["y"], float) - oy) / pf)
        ws.append(wt)
        bs.append(np.full(len(wt), i))
        pr = probes[i]
        params.append({"pixel_size_angstrom": px[i], "energy_ev": pr.energy_ev, "semiangle_mrad": pr.semiangle_mrad,
                       "defocus_angstrom": pr.defocus_angstrom, "aberrations": dict(pr.aberrations),
                       "source_fwhm_angstrom": src[i], "thickness_exponent": gam[i],
                       "saturation_weight": sat[i], "mode": mode,
                       "oversample": m, "n_columns": int(len(wt)), "origin_angstrom": (ox, oy)})
        if mode == "abf":
            params[-1]["abf_contrast"] = abf[i]
    cat = lambda arrs, dt: torch.as_tensor(np.concatenate(arrs), dtype=dt, device=device)  # noqa: E731
    splat = splat_bilinear(cat(xs, torch.float64), cat(ys, torch.float64), cat(ws, dtype), cat(bs, torch.long),
                           b, (hm, wm))
    img = torch.fft.irfft2(torch.fft.rfft2(splat) * kernels, s=(hm, wm))
    if m > 1:
        img = img[:, ::m, ::m].contiguous()
    img = img * (m * m)  # a column of weight 1 integrates to 1 over the coarse pixels
    if mode == "abf":
        peak = torch.stack([k.max() for k in torch.fft.irfft2(kernels, s=(hm, wm))]) * (m * m)
        wmax = torch.tensor([float(wt.max()) if len(wt) else 1.0 for wt in ws], dtype=dtype, device=device)
        depth = torch.tensor(abf, dtype=dtype, device=device)
        img = 1.0 - depth[:, None, None] * img / (wmax * peak).clamp_min(1e-30)[:, None, None]
    return img, params
