"""The README's picture: SrTiO3 PACBED simulated by inverscope, recorded by a messy camera, registered back.

    python docs/assets/make_readme_figure.py          # writes docs/assets/readme.png (about 20 s on 2 cores)

Everything in it is computed here: PACBED of SrTiO3 [001] at 200 kV, 13.6 mrad (the PACBED study's
microscope) at three thicknesses from one multislice pass; the 30 nm pattern as an 8-bit camera records
it (0.6 mrad/px, off-centre, rotated 27 degrees, blur, background, shot noise, JPEG quality 75); and that
frame registered back onto crystal axes and the simulation's angular grid, as ``inverscope predict`` does
before a network reads it.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import inverscope as isc  # noqa: E402
from inverscope.analysis.registration import register_pacbed, resample_to_crystal  # noqa: E402
from inverscope.datasets.degrade import CameraModel, degrade  # noqa: E402

OUT = Path(__file__).with_name("readme.png")
ALPHA, A = 13.6, 3.905


def main() -> None:
    atoms = isc.perovskite_slab("SrTiO3", repeat_xy=4, thickness_angstrom=300.0)
    grid = isc.Grid.from_sampling(np.diag(atoms.cell)[:2], 0.1)
    potential = isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=A / 2)
    exits = [50.77, 148.39, 300.69]
    res = isc.pacbed(potential, isc.Probe(200e3, ALPHA), (A, A), positions_per_cell=4,
                     detector=isc.PixelatedDetector(max_angle_mrad=2.5 * ALPHA), thicknesses_angstrom=exits,
                     phonons=isc.FrozenPhonons({"Sr": 0.088, "Ti": 0.075, "O": 0.085}, num_configs=2, seed=0))
    patterns, sampling = np.asarray(res.array), float(res.sampling_mrad[0])
    camera = CameraModel(frame_shape=(256, 256), mrad_per_px=0.6, centre_px=(139.3, 117.8), rotation_deg=27.0,
                         dose_e_per_pattern=1e6, peak_counts=230, saturation_counts=255, bit_depth=8,
                         jpeg_quality=75, blur_sigma_px=0.8, background_counts=6)
    frame, _ = degrade(patterns[-1], camera, np.random.default_rng(3), sampling_mrad=sampling)
    reference = resample_to_crystal(patterns[-1], sampling, ALPHA, crop_alpha=2.0, out_shape=(96, 96))[0]
    reg = register_pacbed(frame, ALPHA, crop_alpha=2.0, out_shape=(96, 96), reference=reference[None])

    fig, ax = plt.subplots(1, 5, figsize=(14, 3.1))
    for a, p, t in zip(ax[:3], patterns, res.thicknesses_angstrom):
        a.imshow(p ** 0.5, cmap="magma")
        a.set_title(f"simulated, {t / 10:.0f} nm")
    ax[3].imshow(frame.astype(float)[40:232, 22:214] ** 0.5, cmap="gray")
    ax[3].set_title("30 nm as a camera records it")
    ax[4].imshow(reg.pattern ** 0.5, cmap="magma")
    ax[4].set_title(f"registered ({reg.mrad_per_px:.2f} mrad/px found)")
    for a in ax:
        a.set_xticks([]), a.set_yticks([])
    fig.suptitle("SrTiO3 [001] PACBED, 200 kV, 13.6 mrad: simulate, degrade like an instrument, register, read",
                 fontsize=11)
    fig.tight_layout()
    fig.subplots_adjust(top=0.8)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
