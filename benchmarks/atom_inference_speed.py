"""Atom-finding inference speed on CPU (or a GPU): megapixels per second through the U-Net ensemble,
and through the whole per-frame step of ``inverscope predict`` (standardise, network, locate, refine).

Issue 14's target: >= 0.5 Mpx/s on 2 CPU cores. Cases, interleaved run by run (``--repeats``
warm repeats each after one warm-up), on one ``--size`` x ``--size`` image:

* ``net``: :func:`ensemble_predict` alone, for 1 net and for the whole ensemble, in NCHW and in
  channels-last memory layout (what ``load_atom_model`` now uses on CPU);
* ``frame``: :func:`locate_frame` (the per-frame work of ``inverscope predict``) with the
  ensemble as loaded.

The image is a synthetic graphene HAADF image at the model's pixel size from
:class:`AtomImageGenerator` (so the locator sees a realistic number of atoms). With ``--model``
the trained ensemble of a study run is used (e.g. ``out/atoms_graphene/models/atoms_0``);
without, randomly initialised nets of the quick recipe's shape (depth 3, 8 base channels, 3
nets; the network time does not depend on the weights, the locate time does, so ``frame`` is
only reported with ``--model``).

    python benchmarks/atom_inference_speed.py --model out/atoms_graphene/models/atoms_0
    python benchmarks/atom_inference_speed.py --size 128 --repeats 2 --out /tmp/s.json   # smoke

Writes ``benchmarks/results/atom_inference_speed.json`` (machine, load average, threads,
median and [min, max] seconds and Mpx/s per case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic_image(size: int, pixel_size: float, seed: int = 0) -> np.ndarray:
    from inverscope.datasets.atom_images import AtomImageConfig, AtomImageGenerator

    cfg = AtomImageConfig(structures={"graphene": 1.0}, output_shape=(size, size),
                          pixel_size_angstrom=(pixel_size, pixel_size), energy_ev=[60000.0],
                          dose_e_per_a2=(1e4, 1e4))
    return AtomImageGenerator(cfg, seed=seed).sample(1, seed=seed)["images"][0, 0].numpy().astype(np.float64)


def _layout(nets, channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for n in nets:
        n.to(memory_format=fmt)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a trained atom-finding model (its ensemble siblings are loaded too)")
    ap.add_argument("--size", type=int, default=512, help="image side [px]")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "atom_inference_speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from inverscope.analysis.atom_predict import AtomModel, load_atom_model, locate_frame
    from inverscope.models.nets.unet import UNet, UNetConfig, ensemble_predict

    if args.model:
        model = load_atom_model(args.model, device=args.device)
    else:
        cfg = UNetConfig(n_classes=3, depth=3, base_channels=8)
        nets = [UNet(cfg).to(args.device).eval() for _ in range(3)]
        model = AtomModel(nets, {"pixel_size_angstrom": 0.16, "config": cfg.model_dump()}, ["C", "Si"], args.device, [])
    nets = model.nets
    img = synthetic_image(args.size, model.nominal)
    x = torch.as_tensor(((img - img.mean()) / img.std())[None, None], dtype=torch.float32, device=args.device)
    mpx = args.size * args.size / 1e6

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def net_case(k: int, cl: bool):
        def run():
            _layout(nets[:k], cl)
            xx = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
            sync()
            t = time.perf_counter()
            ensemble_predict(nets[:k], xx)
            sync()
            return time.perf_counter() - t
        return run

    cases = {}
    for k in sorted({1, len(nets)}):
        for cl in (False, True):
            cases[f"net x{k} {'channels_last' if cl else 'nchw'}"] = net_case(k, cl)
    n_atoms = {}
    if args.model:
        def frame_case():
            _layout(nets, args.device == "cpu")  # as load_atom_model leaves them
            t = time.perf_counter()
            table, _ = locate_frame(model, img, 1.0, model.nominal)
            n_atoms["frame"] = len(table)
            return time.perf_counter() - t
        cases[f"frame x{len(nets)} (predict's per-frame work)"] = frame_case

    load_before = os.getloadavg()
    for run in cases.values():  # warm-up
        run()
    times = {name: [] for name in cases}
    for r in range(args.repeats):
        for name, run in cases.items():
            times[name].append(run())
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), flush=True)
    load_after = os.getloadavg()

    results = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = {"seconds_median": med, "seconds_min": min(ts), "seconds_max": max(ts),
                         "mpx_per_s_median": mpx / med, "mpx_per_s_range": [mpx / max(ts), mpx / min(ts)]}
        print(f"{name:45s} {mpx / med:7.3f} Mpx/s  (median {med:.3f} s, [{min(ts):.3f}, {max(ts):.3f}])")
    if n_atoms:
        print(f"atoms found per frame: {n_atoms['frame']}")
    out = {"benchmark": "atom_inference_speed", "issue": 14, "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads(), "device": args.device,
                       "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"},
           "loadavg_before": list(load_before), "loadavg_after": list(load_after),
           "settings": {"model": args.model or "random init, depth 3, 8 base channels, 3 nets", "size_px": args.size,
                        "repeats": args.repeats, "n_nets": len(nets), "config": model.meta.get("config"),
                        "pixel_size_angstrom": model.nominal, "atoms_per_frame": n_atoms.get("frame")},
           "results": results, "target_mpx_per_s": 0.5}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    main()
