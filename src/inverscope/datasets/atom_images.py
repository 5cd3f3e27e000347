"""Synthetic atomically resolved STEM images with atom-position targets (for a U-Net atom finder).

:class:`AtomImageGenerator` draws, per image: a structure (by name and weight, from
:mod:`inverscope.physics.structures.atomic_2d`, with random rotation, strain, jitter and
defects), a true pixel size and a *reported* one (the calibration error), a probe, and renders
the incoherent HAADF image (:mod:`inverscope.physics.imaging.incoherent`) on a canvas a bit
larger than the output. It then applies, in torch on the configured device:

1. scan geometry (:func:`scan_positions`): the output pixel ``(u, v)`` (column, row) samples
   the canvas at ``R(theta) [u' + s(v) + shear v', (1 + stretch) v'] + centre + crop`` with
   ``u', v'`` centred output coordinates, ``s(v)`` the per-line x shift (white scan-line jitter
   plus a sinusoidal line-sync error of random period and phase), ``shear`` / ``stretch`` slow
   drift (x / y drift per line, an affine distortion across the frame), ``theta`` the
   scan-rotation error and ``crop`` a random offset (the random crop). The canvas is sampled
   bicubically (:func:`torch.nn.functional.grid_sample`);
2. a low-frequency background (bicubic upsampling of a random 4 x 4 field) and, with some
   probability, a contamination blob (an elliptical Gaussian-edged disc), both as fractions
   of the mean image intensity (they add signal, as amorphous contamination does);
3. dose: the image is scaled so that its mean is ``dose * p_true^2 * eta`` counts per pixel,
   with ``dose`` [e/Å^2], ``p_true`` the true pixel size [Å] and ``eta`` the detector
   efficiency factor (the fraction of the beam the annular detector records, times its
   quantum efficiency; 0.05 - 0.2 for HAADF);
4. Poisson shot noise on those counts, then Gaussian read noise [counts];
5. optionally a per-image standardization (zero mean, unit standard deviation).

Targets: the truth tables hold every target column inside the frame (position in output
pixels and in Å at the *true* pixel size, global class index) plus vacancies
(``class = -1``, ``is_vacancy = True``); heat maps ``(B, n_classes + 1, H, W)`` hold, per class,
the maximum over that class's columns of ``exp(-r^2 / (2 sigma^2))`` and in the last channel
the background ``1 - max`` over classes. ``sigma = max(heatmap_min_sigma_px,
heatmap_sigma_scale * FWHM / 2.355 / p_true)`` with FWHM the effective probe FWHM (probe and
source) [Å].

Pixel convention: images are ``(row, col)``; ``x_px`` is the column, ``y_px`` the row, pixel
centres at integers. Same seed, same batch (CPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError, field_error
from inverscope.core.grid import next_fft_size
from inverscope.physics.imaging.incoherent import FWHM_PER_SIGMA, probe_fwhm_angstrom, render_incoherent
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.structures.atomic_2d import BUILDERS, builder_class_names, projected_columns

Range = tuple[float, float]


class AtomImageConfig(StrictModel):
    """Ranges of every random draw of :class:`AtomImageGenerator` (uniform unless noted)."""

    structures: dict[str, float] = Field(default_factory=lambda: {"graphene": 1.0, "MoS2": 1.0, "WS2": 0.5,
                                                                  "SrTiO3_001": 1.0, "SrTiO3_110": 0.5,
                                                                  "Pt_on_aC": 0.5},
                                         description="structure name -> relative weight")
    structure_options: dict[str, dict] = Field(default_factory=dict,
                                               description="fixed keyword arguments per structure builder")
    classes: list[str] | None = Field(None, description="target class names (null: union of the structures' classes)")
    class_map: dict[str, str] = Field(default_factory=dict, description="rename site classes, e.g. {'S1': 'S2'}")
    output_shape: tuple[int, int] = Field((256, 256), description="(H, W) [px]")
    pixel_size_angstrom: Range = Field((0.06, 0.3), description="true pixel size [Å]")
    calibration_error: float = Field(0.10, ge=0, lt=0.5, description="reported = true * (1 + U(-e, e))")
    energy_ev: list[float] = Field(default_factory=lambda: [200e3], description="beam energies to choose from [eV]")
    semiangle_mrad: Range = Field((18.0, 30.0), description="convergence semiangle [mrad]")
    defocus_angstrom: Range = Field((-20.0, 20.0), description="defocus [Å]")
    astigmatism_angstrom: Range = Field((0.0, 15.0), description="two-fold astigmatism C12 magnitude [Å]")
    source_fwhm_angstrom: Range = Field((0.5, 0.9), description="Gaussian effective source FWHM [Å]")
    z_exponent: Range = Field((1.6, 2.0), description="HAADF Z exponent n")
    thickness_exponent: Range = Field((0.7, 1.0), description="column weight ~ N^(gamma - 1) sum Z^n")
    saturation_weight: Range = Field((0.0, 0.0), description="W of the saturating column law W (1 - exp(-u / W)), "
                                     "units of sum Z^n (0: off; SrTiO3 at 200 kV fits n = 1.89, W = 4.2e4)")
    strain_max: float = Field(0.02, ge=0, le=0.1, description="strain components uniform in +-strain_max")
    jitter_angstrom: Range = Field((0.0, 0.06), description="thermal jitter per axis [Å]")
    defect_scale: float = Field(1.0, ge=0, description="multiplies every defect density")
    dose_e_per_a2: Range = Field((1e3, 1e5), description="dose [e/Å^2] (log-uniform)")
    detector_efficiency: Range = Field((0.05, 0.2), description="eta: counts per incident electron, on average")
    read_noise_counts: Range = Field((0.0, 1.0), description="Gaussian read-noise sigma [counts]")
    line_jitter_px: Range = Field((0.0, 0.3), description="white per-line x shift sigma [px]")
    line_sync_px: Range = Field((0.0, 0.5), description="sinusoidal line-sync shift amplitude [px]")
    line_sync_period_lines: Range = Field((15.0, 120.0), description="its period [lines]")
    drift_px_per_line: Range = Field((0.0, 0.01), description="slow-drift magnitude [px per line] (random direction)")
    scan_rotation_deg: Range = Field((-2.0, 2.0), description="scan-rotation error [deg]")
    crop_margin_px: int = Field(8, ge=0, description="random crop offset up to this many px")
    background_fraction: Range = Field((0.0, 0.3), description="low-frequency background / mean intensity")
    contamination_probability: float = Field(0.3, ge=0, le=1)
    contamination_fraction: Range = Field((0.2, 1.0), description="blob height / mean intensity")
    heatmap_sigma_scale: float = Field(0.5, gt=0, description="heat-map sigma = scale * FWHM / 2.355")
    heatmap_min_sigma_px: float = Field(1.0, gt=0)
    oversample: int = Field(1, ge=1, le=4, description="render on an oversample-times finer grid")
    standardize: bool = Field(True, description="zero mean, unit standard deviation per image")
    device: str = "cpu"

    @model_validator(mode="after")
    def _ranges(self):
        for name, value in self:
            if isinstance(value, tuple) and len(value) == 2 and name != "output_shape" and value[0] > value[1]:
                raise ValueError(f"{name}: low {value[0]} > high {value[1]}")
        if self.pixel_size_angstrom[0] <= 0:
            raise ValueError("pixel_size_angstrom must be > 0")
        if min(self.output_shape) < 16:
            raise ValueError("output_shape must be at least 16 x 16 px")
        return self


# --------------------------------------------------------------------------- degradations (torch)

def poisson_counts(expected: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson shot noise: integer counts (as float) with mean `expected` [counts]."""
    return torch.poisson(expected.clamp_min(0), generator=generator)


def read_noise(counts: torch.Tensor, sigma_counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian read noise of standard deviation `sigma_counts` (per image, (B,)) [counts]."""
    noise = torch.randn(counts.shape, generator=generator, device=counts.device, dtype=counts.dtype)
    return counts + noise * sigma_counts.reshape(-1, *([1] * (counts.dim() - 1)))


def smooth_background(batch: int, shape, generator: torch.Generator, device="cpu", nodes: int = 4) -> torch.Tensor:
    """Random smooth fields (B, H, W) in [0, 1]: a (nodes x nodes) uniform field upsampled bicubically."""
    coarse = torch.rand((batch, 1, nodes, nodes), generator=generator, device=device)
    up = F.interpolate(coarse, size=tuple(shape), mode="bicubic", align_corners=True)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return (up - lo) / (hi - lo).clamp_min(1e-12)


def contamination_blob(shape, centre_px, radius_px: float, aspect: float, angle_rad: float, edge_px: float,
                       device="cpu") -> torch.Tensor:
    """An elliptical blob (H, W) of height 1 with a smooth edge `edge_px` wide."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    dx, dy = xx - centre_px[0], yy - centre_px[1]
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    u, v = c * dx + s * dy, (-s * dx + c * dy) / aspect
    r = torch.sqrt(u ** 2 + v ** 2)
    return torch.sigmoid((radius_px - r) / max(edge_px, 1e-3))


def scan_positions(shape, shift_px: np.ndarray, shear: float, stretch: float, rotation_rad: float,
                   centre_px) -> np.ndarray:
    """Canvas position (x, y) [px] sampled by every output pixel: (H, W, 2), see the module docs."""
    h, w = shape
    v, u = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    up = u - (w - 1) / 2 + shift_px[:, None] + shear * (v - (h - 1) / 2)
    vp = (1 + stretch) * (v - (h - 1) / 2)
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    return np.stack([c * up - s * vp + centre_px[0], s * up + c * vp + centre_px[1]], axis=-1)


def canvas_to_output(x, y, shape, shift_px: np.ndarray, shear: float, stretch: float, rotation_rad: float,
                     centre_px) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`scan_positions`: output pixel coordinates (u, v) of canvas points (x, y) [px].

    The per-line shift is interpolated linearly at the fractional row.
    """
    h, w = shape
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    dx, dy = np.asarray(x) - centre_px[0], np.asarray(y) - centre_px[1]
    up, vp = c * dx + s * dy, -s * dx + c * dy
    vc = vp / (1 + stretch)
    v = vc + (h - 1) / 2
    sh = np.interp(v, np.arange(h), shift_px)
    u = up - sh - shear * vc + (w - 1) / 2
    return u, v


def gaussian_heatmaps(points: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int, shape,
                      sigma_px, device="cpu") -> torch.Tensor:
    """Heat maps (B, n_classes + 1, H, W): per class the max of unit Gaussians, last channel 1 - max.

    Parameters
    ----------
    points : list of (x_px, y_px, class) arrays, one per image (classes >= n_classes or < 0 ignored).
    sigma_px : float or sequence (one per image) [px]
    """
    h, w = int(shape[0]), int(shape[1])
    b = len(points)
    sig = list(sigma_px) if np.ndim(sigma_px) else [float(sigma_px)] * b
    out = torch.zeros((b, n_classes + 1, h * w), dtype=torch.float32, device=device)
    for i, (x, y, c) in enumerate(points):
        x, y, c = (np.asarray(a) for a in (x, y, c))
        ok = (c >= 0) & (c < n_classes)
        if not ok.any():
            continue
        r = int(math.ceil(3.5 * sig[i]))
        off = torch.arange(-r, r + 1, device=device)
        xt = torch.as_tensor(x[ok], dtype=torch.float32, device=device)
        yt = torch.as_tensor(y[ok], dtype=torch.float32, device=device)
        ct = torch.as_tensor(c[ok], dtype=torch.long, device=device)
        px = torch.round(xt)[:, None, None].long() + off[None, None, :]
        py = torch.round(yt)[:, None, None].long() + off[None, :, None]
        val = torch.exp(-((px - xt[:, None, None]) ** 2 + (py - yt[:, None, None]) ** 2) / (2 * sig[i] ** 2))
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        idx = ct[:, None, None] * (h * w) + py * w + px
        out[i].view(-1).scatter_reduce_(0, idx[inside], val[inside].float(), reduce="amax")
    out = out.view(b, n_classes + 1, h, w)
    out[:, n_classes] = 1.0 - out[:, :n_classes].amax(dim=1)
    return out


# --------------------------------------------------------------------------- generator

#: Mean defect counts per nm^2 (times ``defect_scale``) drawn per structure.
DEFECT_DENSITY_PER_NM2 = {
    "graphene": {"Si1C3": 0.03, "Si1C4": 0.01, "Si2": 0.01, "Si3": 0.005, "vacancy": 0.02},
    "tmd": {"metal_vacancy": 0.01, "chalcogen_vacancy": 0.08, "chalcogen_divacancy": 0.01, "antisite": 0.04},
    "perovskite": {"A": 0.01, "B": 0.005, "O": 0.03},
    "adatoms": {"heavy": 0.15},
}


class AtomImageGenerator:
    """Batches of synthetic HAADF images with truth tables and heat-map targets.

    Parameters
    ----------
    config : AtomImageConfig or dict
    seed : int
        Seed of the internal generator used when :meth:`sample` gets no seed.
    """

    def __init__(self, config: AtomImageConfig | dict | None = None, seed: int = 0):
        if config is None:
            config = AtomImageConfig()
        elif isinstance(config, dict):
            from inverscope.core.config import validate
            config = validate(AtomImageConfig, config, "atom_images")
        self.config = config
        names = [n for n, wt in config.structures.items() if wt > 0]
        if not names:
            raise field_error("structures", config.structures, "need at least one structure with weight > 0")
        for n in names:
            if n not in BUILDERS:
                raise field_error("structures", n, f"allowed: {', '.join(BUILDERS)}")
        self.structure_names = names
        wts = np.array([config.structures[n] for n in names], float)
        self.structure_weights = wts / wts.sum()
        if config.classes is None:
            classes: list[str] = []
            for n in names:
                ignore = {"C_support"}
                for c in builder_class_names(n):
                    c = config.class_map.get(c, c)
                    if c not in classes and c not in ignore:
                        classes.append(c)
            self.classes = classes
        else:
            self.classes = list(config.classes)
        self._rng = np.random.default_rng(seed)
        self._check_atom_size()
        self.canvas = self._canvas_size()

    # ---- setup checks
    def _check_atom_size(self):
        c = self.config
        e_max = max(c.energy_ev)
        fwhm = probe_fwhm_angstrom(Probe(e_max, c.semiangle_mrad[1]), c.source_fwhm_angstrom[0])
        p_max = c.pixel_size_angstrom[1]
        if fwhm / p_max < 2.0:
            raise InverscopeError(f"pixel_size_angstrom: up to {p_max:g} Å makes the smallest atoms "
                                  f"(FWHM {fwhm:.3g} Å) {fwhm / p_max:.2f} px wide; use pixel sizes <= {fwhm / 2:.3g} Å "
                                  "for at least 2 px per atom")
        self.min_fwhm_angstrom = fwhm

    def _canvas_size(self) -> int:
        c = self.config
        h, w = c.output_shape
        th = math.radians(max(abs(v) for v in c.scan_rotation_deg))
        n = max(h, w)
        drift = max(abs(v) for v in c.drift_px_per_line) * n
        shift = 4 * c.line_jitter_px[1] + c.line_sync_px[1]
        half = 0.5 * n * (math.cos(th) + math.sin(th)) * 1.0 + drift + shift + c.crop_margin_px + 8
        return next_fft_size(int(math.ceil(2 * half)))

    # ---- per-sample draws
    def _structure_kwargs(self, name: str, rng: np.random.Generator, extent: float) -> dict:
        c = self.config
        area_nm2 = extent ** 2 / 100.0
        pois = lambda rate: int(rng.poisson(rate * area_nm2 * c.defect_scale))  # noqa: E731
        kw: dict = {"extent": extent, "seed": rng, "jitter_angstrom": float(rng.uniform(*c.jitter_angstrom))}
        if not name.endswith("_on_aC"):
            kw["rotation_deg"] = "random"
            kw["strain"] = tuple(float(v) for v in rng.uniform(-c.strain_max, c.strain_max, 3))
        if name == "graphene":
            d = DEFECT_DENSITY_PER_NM2["graphene"]
            kw["si_defects"] = {k: pois(d[k]) for k in ("Si1C3", "Si1C4", "Si2", "Si3")}
            kw["n_vacancies"] = pois(d["vacancy"])
            if rng.random() < 0.2:
                kw["grain_boundary_deg"] = float(rng.uniform(8, 30) * rng.choice([-1, 1]))
        elif name in ("MoS2", "WS2"):
            d = DEFECT_DENSITY_PER_NM2["tmd"]
            kw.update(n_metal_vacancies=pois(d["metal_vacancy"]), n_chalcogen_vacancies=pois(d["chalcogen_vacancy"]),
                      n_chalcogen_divacancies=pois(d["chalcogen_divacancy"]), n_antisites=pois(d["antisite"]))
        elif name.startswith("SrTiO3"):
            d = DEFECT_DENSITY_PER_NM2["perovskite"]
            kw.update(thickness_cells=int(rng.integers(2, 9)), vacancy_columns={k: pois(d[k]) for k in ("A", "B", "O")},
                      b_displacement_angstrom=tuple(float(v) for v in rng.uniform(-0.15, 0.15, 2)),
                      b_displacement_sigma_angstrom=float(rng.uniform(0, 0.08)))
        else:
            kw.update(n_heavy=max(1, pois(DEFECT_DENSITY_PER_NM2["adatoms"]["heavy"])),
                      support_thickness_angstrom=float(rng.uniform(5, 15)))
        kw.update(self.config.structure_options.get(name, {}))
        return kw

    def _class_index(self, names: list[str]) -> np.ndarray:
        idx = []
        for n in names:
            n = self.config.class_map.get(n, n)
            idx.append(self.classes.index(n) if n in self.classes else -1)
        return np.array(idx, dtype=np.int64)

    def sample(self, batch_size: int, seed: int | None = None) -> dict:
        """Generate one batch.

        Returns
        -------
        dict with
        ``images`` : torch.Tensor (B, 1, H, W) float32;
        ``heatmaps`` : torch.Tensor (B, n_classes + 1, H, W) float32 (last channel: background);
        ``truth`` : list of dicts of numpy arrays ``x_px``, ``y_px``, ``x_angstrom``, ``y_angstrom``
        (true scale), ``class`` (global index; -1 for vacancies), ``class_name``, ``is_vacancy``;
        ``params`` : list of per-image dicts; ``classes`` : the class names.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise field_error("batch_size", batch_size, "a whole number >= 1")
        c = self.config
        dev = torch.device(c.device)
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        sample_rngs = [np.random.default_rng(s) for s in rng.integers(0, 2 ** 63, batch_size)]
        tgen = torch.Generator(device=dev)
        tgen.manual_seed(int(rng.integers(0, 2 ** 63)))
        h, w = c.output_shape
        nc = self.canvas
        tables, probes, params, geom = [], [], [], []
        for r in sample_rngs:
            name = self.structure_names[int(r.choice(len(self.structure_names), p=self.structure_weights))]
            p_true = float(r.uniform(*c.pixel_size_angstrom))
            p_rep = p_true * (1 + float(r.uniform(-c.calibration_error, c.calibration_error)))
            n_exp = float(r.uniform(*c.z_exponent))
            kw = self._structure_kwargs(name, r, nc * p_true)
            atoms = BUILDERS[name](**kw)
            cols = projected_columns(atoms, tol=0.3, z_exponent=n_exp)
            energy = float(c.energy_ev[int(r.integers(len(c.energy_ev)))])
            probe = Probe(energy, float(r.uniform(*c.semiangle_mrad)), defocus_angstrom=float(r.uniform(*c.defocus_angstrom)),
                          aberrations={"C12": float(r.uniform(*c.astigmatism_angstrom)), "phi12": float(r.uniform(0, math.pi))})
            src = float(r.uniform(*c.source_fwhm_angstrom))
            drift = float(r.uniform(*c.drift_px_per_line))
            ang = float(r.uniform(0, 2 * math.pi))
            sync_amp = float(r.uniform(*c.line_sync_px))
            sync_per = float(r.uniform(*c.line_sync_period_lines))
            jit = float(r.uniform(*c.line_jitter_px))
            shift = r.normal(0, jit, h) + sync_amp * np.sin(2 * math.pi * np.arange(h) / sync_per + r.uniform(0, 2 * math.pi))
            crop = r.uniform(-c.crop_margin_px, c.crop_margin_px, 2)
            g = {"shift_px": shift, "shear": drift * math.cos(ang), "stretch": drift * math.sin(ang),
                 "rotation_rad": math.radians(float(r.uniform(*c.scan_rotation_deg))),
                 "centre_px": ((nc - 1) / 2 + crop[0], (nc - 1) / 2 + crop[1])}
            deg = {"dose_e_per_a2": float(math.exp(r.uniform(*np.log(c.dose_e_per_a2)))),
                   "detector_efficiency": float(r.uniform(*c.detector_efficiency)),
                   "read_noise_counts": float(r.uniform(*c.read_noise_counts)),
                   "background_fraction": float(r.uniform(*c.background_fraction)),
                   "contamination": bool(r.random() < c.contamination_probability),
                   "contamination_fraction": float(r.uniform(*c.contamination_fraction)),
                   "contamination_centre_px": (float(r.uniform(0, w)), float(r.uniform(0, h))),
                   "contamination_radius_px": float(r.uniform(0.1, 0.4) * min(h, w)),
                   "contamination_aspect": float(r.uniform(0.5, 1.0)),
                   "contamination_angle_rad": float(r.uniform(0, math.pi))}
            tables.append(cols)
            w_sat = float(r.uniform(*c.saturation_weight)) if c.saturation_weight[1] > 0 else 0.0  # (no draw when off)
            probes.append((probe, src, float(r.uniform(*c.thickness_exponent)), w_sat))
            geom.append(g)
            params.append({"structure": name, "structure_params": atoms.info.get("params", {}),
                           "rotation_deg": atoms.info.get("params", {}).get("rotation_deg", 0.0),
                           "pixel_size_true_angstrom": p_true, "pixel_size_reported_angstrom": p_rep,
                           "z_exponent": n_exp, "scan_shear": g["shear"], "scan_stretch": g["stretch"],
                           "scan_rotation_deg": math.degrees(g["rotation_rad"]), "line_jitter_px": jit,
                           "line_sync_px": sync_amp, "line_sync_period_lines": sync_per, "crop_offset_px": tuple(crop),
                           "canvas_px": nc, **deg, "_atoms": atoms})
        # ---- render the canvases
        canvas, rparams = render_incoherent(tables, (nc, nc), [p["pixel_size_true_angstrom"] for p in params],
                                            [pr[0] for pr in probes], [pr[1] for pr in probes],
                                            [pr[2] for pr in probes], saturation_weight=[pr[3] for pr in probes],
                                            oversample=c.oversample, device=dev)
        # ---- scan geometry: sample the canvas
        pos = np.stack([scan_positions((h, w), **g) for g in geom])  # (B, H, W, 2)
        norm = torch.as_tensor(pos / (nc - 1) * 2 - 1, dtype=torch.float32, device=dev)
        img = F.grid_sample(canvas[:, None], norm, mode="bicubic", padding_mode="border", align_corners=True)[:, 0]
        img = img.clamp_min(0)
        # ---- background and contamination (fractions of the mean)
        mean = img.mean(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        bg = smooth_background(batch_size, (h, w), tgen, dev)
        frac = torch.tensor([p["background_fraction"] for p in params], device=dev)[:, None, None]
        img = img + frac * mean * bg
        for i, p in enumerate(params):
            if p["contamination"]:
                blob = contamination_blob((h, w), p["contamination_centre_px"], p["contamination_radius_px"],
                                          p["contamination_aspect"], p["contamination_angle_rad"],
                                          0.1 * p["contamination_radius_px"], dev)
                img[i] += p["contamination_fraction"] * mean[i, 0, 0] * blob
        # ---- dose, shot and read noise
        lam = torch.tensor([p["dose_e_per_a2"] * p["pixel_size_true_angstrom"] ** 2 * p["detector_efficiency"]
                            for p in params], dtype=torch.float32, device=dev)
        img = img / img.mean(dim=(1, 2), keepdim=True).clamp_min(1e-30) * lam[:, None, None]
        img = poisson_counts(img, tgen)
        img = read_noise(img, torch.tensor([p["read_noise_counts"] for p in params], device=dev), tgen)
        if c.standardize:
            img = (img - img.mean(dim=(1, 2), keepdim=True)) / img.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        # ---- truth and heat maps
        truth, points, sigmas = [], [], []
        for i, p in enumerate(params):
            atoms = p.pop("_atoms")
            p.update({k: v for k, v in rparams[i].items() if k not in ("pixel_size_angstrom", "origin_angstrom")})
            p["mean_counts_per_px"] = float(lam[i])
            fwhm = probe_fwhm_angstrom(probes[i][0], probes[i][1], samples_per_resolution=8)
            p["probe_fwhm_angstrom"] = fwhm
            sigmas.append(max(c.heatmap_min_sigma_px, c.heatmap_sigma_scale * fwhm / FWHM_PER_SIGMA / p["pixel_size_true_angstrom"]))
            p["heatmap_sigma_px"] = sigmas[-1]
            t = self._truth(tables[i], atoms, p["pixel_size_true_angstrom"], geom[i], (h, w))
            truth.append(t)
            atom = ~t["is_vacancy"]
            points.append((t["x_px"][atom], t["y_px"][atom], t["class"][atom]))
        heat = gaussian_heatmaps(points, len(self.classes), (h, w), sigmas, dev)
        return {"images": img[:, None].float(), "heatmaps": heat, "truth": truth, "params": params,
                "classes": list(self.classes)}

    def _truth(self, cols: dict, atoms, p_true: float, g: dict, shape) -> dict:
        h, w = shape
        names = atoms.info["site_classes"]
        local = self._class_index(names)
        ignore = set(atoms.info.get("ignore_classes", []))
        keep_cls = np.array([n not in ignore for n in names])
        sc = cols["site_class"]
        sel = keep_cls[sc] & (local[sc] >= 0)
        xs, ys = cols["x"][sel] / p_true, cols["y"][sel] / p_true
        cls = local[sc[sel]]
        cname = [self.config.class_map.get(names[k], names[k]) for k in sc[sel]]
        vac = atoms.info.get("vacancies", [])
        vx = np.array([v["x"] for v in vac]) / p_true if vac else np.empty(0)
        vy = np.array([v["y"] for v in vac]) / p_true if vac else np.empty(0)
        xs, ys = np.r_[xs, vx], np.r_[ys, vy]
        cls = np.r_[cls, -np.ones(len(vx), np.int64)]
        cname = cname + [v["label"] for v in vac]
        isvac = np.r_[np.zeros(int(sel.sum()), bool), np.ones(len(vx), bool)]
        u, v = canvas_to_output(xs, ys, shape, **g)
        inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
        return {"x_px": u[inside], "y_px": v[inside], "x_angstrom": u[inside] * p_true, "y_angstrom": v[inside] * p_true,
                "class": cls[inside], "class_name": np.array(cname, dtype=object)[inside] if len(cname) else np.empty(0, object),
                "is_vacancy": isvac[inside]}


__all__ = ["AtomImageConfig", "AtomImageGenerator", "canvas_to_output", "contamination_blob", "gaussian_heatmaps",
           "poisson_counts", "read_noise", "scan_positions", "smooth_background"]
