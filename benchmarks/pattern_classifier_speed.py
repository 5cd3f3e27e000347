"""Benchmark: CPU inference throughput of the shipped diffraction-pattern classifiers.

    python benchmarks/pattern_classifier_speed.py              # every shipped config, about 2.5 min
    python benchmarks/pattern_classifier_speed.py --full       # 5 timed repeats for every config (~5 min)
    python benchmarks/pattern_classifier_speed.py --only resnet18_quick vgg11_bn_quick

Each config of :data:`inverscope.models.nets.pattern_classifiers.SHIPPED` (1 input channel,
classification head, 8 classes) is built with seed 0, put in eval mode and run under
``torch.inference_mode`` on random 64 x 64 patterns, batch 256, 2 torch threads.
OMP_WAIT_POLICY=PASSIVE is set before torch is imported (OpenMP threads sleep instead of
spinning between parallel regions; the benchmark machine is shared, and spinning threads
distort both this run and its neighbours). Activations and weights are in channels-last memory
format by default (oneDNN's preferred layout; about 1.2-1.4x faster than contiguous on the
ResNets here); ``--memory-format contiguous`` measures the default layout.

Protocol per config: one warm-up forward pass of 32 patterns (allocations, kernel selection,
weights paged in), then up to 5 timed batches of 256. A config stops early once its timed
batches exceed ``--max-seconds`` (default 25 s), keeping at least 2, so the full-width ResNets
fit the 3-minute run; ``repeats`` in the output says how many were timed, and ``--full`` forces
5. Throughput is patterns/s = 256 / batch time; reported as the median over repeats with the
min and max and the relative spread (max - min) / median.
Writes ``benchmarks/results/pattern_classifier_speed.json`` (machine, date, load, every row).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from inverscope.core.config import validate  # noqa: E402
from inverscope.models.nets import NETS  # noqa: E402
from inverscope.models.nets.pattern_classifiers import (  # noqa: E402
    SHIPPED,
    count_parameters,
)

CLASSES = {name: NETS[name] for name in ("polarization_cnn", "vgg_pattern", "resnet_pattern")}
BATCH, SIZE, WARMUP_BATCH, MAX_REPEATS, MIN_REPEATS = 256, 64, 32, 5, 2
OUT = Path(__file__).parent / "results" / "pattern_classifier_speed.json"


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def measure(name: str, max_seconds: float, full: bool, channels_last: bool) -> dict:
    arch, cfg = SHIPPED[name]
    cls, cfg_cls = CLASSES[arch]
    torch.manual_seed(0)
    net = cls(validate(cfg_cls, cfg, name)).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 1, SIZE, SIZE, generator=gen).contiguous(memory_format=fmt)
    times = []
    with torch.inference_mode():
        t = time.perf_counter()
        net(x[:WARMUP_BATCH])
        warmup_s = time.perf_counter() - t
        while len(times) < MAX_REPEATS:
            t = time.perf_counter()
            out = net(x)
            times.append(time.perf_counter() - t)
            if not full and len(times) >= MIN_REPEATS and sum(times) > max_seconds:
                break
    assert tuple(out.shape) == (BATCH, net.config.outputs)
    rates = [BATCH / s for s in times]
    med = statistics.median(rates)
    return {"name": name, "architecture": arch, "config": net.config.model_dump(mode="json"),
            "parameters": count_parameters(net), "repeats": len(times), "batch_s": times,
            "warmup_s": warmup_s, "patterns_per_s_median": med, "patterns_per_s_min": min(rates),
            "patterns_per_s_max": max(rates), "relative_spread": (max(rates) - min(rates)) / med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(SHIPPED), default=list(SHIPPED))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=25.0, help="time box per config for the timed batches")
    ap.add_argument("--full", action="store_true", help="always time 5 batches")
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    ap.add_argument("--json", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), _load()
    rows = []
    for name in args.only:
        r = measure(name, args.max_seconds, args.full, args.memory_format == "channels_last")
        rows.append(r)
        print(f"{name:18s} {r['parameters']:>12,d} params  {r['patterns_per_s_median']:9.1f} patterns/s "
              f"(min {r['patterns_per_s_min']:.1f}, max {r['patterns_per_s_max']:.1f}, {r['repeats']} x {BATCH})",
              flush=True)
    result = {"date": str(date.today()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s)",
              "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "memory_format": args.memory_format, "batch": BATCH, "input": [1, SIZE, SIZE],
              "protocol": f"warm-up {WARMUP_BATCH} patterns, then {MIN_REPEATS}-{MAX_REPEATS} timed batches "
                          f"({'5 forced' if args.full else f'time box {args.max_seconds} s'}), inference_mode, eval",
              "loadavg_start": load0, "loadavg_end": _load(), "rows": rows,
              "total_wall_s": time.perf_counter() - t0}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"total {result['total_wall_s']:.0f} s; wrote {args.json}")


if __name__ == "__main__":
    main()
