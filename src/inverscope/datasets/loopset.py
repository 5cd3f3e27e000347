"""Simulated hysteresis-loop training sets: seeded (J0, dJ, dh) sampling -> Ising loops -> Zarr store.

Store layout (Zarr v3 group)::

    params   (loops, 3) float64   J0, dJ, dh
    m_up     (loops, steps) float32 mean spin of the up sweep at field[k]
    m_down   (loops, steps) float32 mean spin of the down sweep at field[k]
    field    (steps,) float64    increasing external field [J units]
    done     (chunks,) bool      set after a chunk's loops are written (resume skips it)
    attrs: schema, config, config_hash, inverscope_version, parameter names, complete

Parameters are drawn once from ``SeedSequence([seed, 0x10095e7])`` (uniform in each range), and
loop i's disorder from ``SeedSequence([seed, i])`` (:func:`inverscope.physics.ising.simulate_loops`),
so the set is the same bytes whatever the chunking, threads or interruptions.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from pydantic import Field, model_validator

import inverscope
from inverscope.core.config import StrictModel
from inverscope.core.resources import Estimate
from inverscope.core.errors import InverscopeError
from inverscope.physics.ising import PARAMETERS, IsingConfig, simulate_loops

SCHEMA = "inverscope.loopset/1"
_PARAM_STREAM = 0x10095E7


class LoopSetConfig(StrictModel):
    """A family of simulated loops: parameter ranges, model settings, size and seed."""

    ising: IsingConfig = Field(default_factory=IsingConfig)
    j0_range: tuple[float, float] = (0.0, 1.25)
    dj_range: tuple[float, float] = (0.0, 1.0)
    dh_range: tuple[float, float] = (0.0, 1.5)
    num_loops: int = Field(8000, ge=1)
    chunk: int = Field(500, ge=1)                 # loops per stored chunk (the unit of resume)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self):
        for name, (lo, hi) in (("j0_range", self.j0_range), ("dj_range", self.dj_range), ("dh_range", self.dh_range)):
            if not hi >= lo:
                raise ValueError(f"{name}: upper end {hi} is below lower end {lo}")
            if name != "j0_range" and lo < 0:
                raise ValueError(f"{name}: spreads cannot be negative (got {lo})")
        return self

    def ranges(self) -> np.ndarray:
        return np.array([self.j0_range, self.dj_range, self.dh_range], dtype=np.float64)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def sample_params(self) -> np.ndarray:
        """(num_loops, 3) parameters, uniform in the ranges, seeded."""
        g = np.random.default_rng(np.random.SeedSequence([self.seed, _PARAM_STREAM]))
        r = self.ranges()
        return r[:, 0] + (r[:, 1] - r[:, 0]) * g.random((self.num_loops, 3))


@dataclass
class LoopSet:
    """A loaded training set (arrays in memory)."""

    params: np.ndarray
    field: np.ndarray
    m_up: np.ndarray
    m_down: np.ndarray
    config: dict
    simulate_s: float = 0.0           # wall time spent simulating in this call (0 when all was stored)
    simulated: int = 0                # loops simulated in this call


def _existing(path: Path, mode: str):
    """An existing loop-set group, or a one-line error naming what `path` is instead."""
    try:
        g = zarr.open_group(str(path), mode=mode)
    except Exception:
        raise InverscopeError(f"{path}: not a Zarr store; choose another path") from None
    if g.attrs.get("schema") != SCHEMA:
        raise InverscopeError(f"{path}: not an inverscope loop set (schema {g.attrs.get('schema')!r})")
    return g


def _open(path: Path, cfg: LoopSetConfig):
    if path.exists():
        g = _existing(path, "r+")
        if g.attrs.get("config_hash") != cfg.config_hash():
            old, new = g.attrs.get("config", {}), cfg.model_dump(mode="json")
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise InverscopeError(f"{path}: loop set was made with another config (differs in {', '.join(diff)}); "
                                  "use a new path or the original config")
        return g
    g = zarr.open_group(str(path), mode="w")
    n, steps = cfg.num_loops, cfg.ising.field_steps
    chunks = -(-n // cfg.chunk)
    g.create_array("params", shape=(n, 3), chunks=(cfg.chunk, 3), dtype="float64", fill_value=np.nan)
    for name in ("m_up", "m_down"):
        g.create_array(name, shape=(n, steps), chunks=(cfg.chunk, steps), dtype="float32", fill_value=np.nan)
    g.create_array("field", shape=(steps,), dtype="float64")
    g["field"][:] = cfg.ising.fields()
    g.create_array("done", shape=(chunks,), dtype="bool", fill_value=False)
    g.attrs.update({"schema": SCHEMA, "config": cfg.model_dump(mode="json"), "config_hash": cfg.config_hash(),
                    "inverscope_version": inverscope.__version__, "parameters": list(PARAMETERS), "complete": False})
    return g


def estimate_resources(cfg: LoopSetConfig, threads: int | None = None) -> Estimate:
    """Memory and disk [bytes] of a loop set from its config: the loops in memory (float32 up and
    down branches, float64 parameters), the lattices being simulated and the stored copy."""
    import math
    import os

    n, steps = float(cfg.num_loops), float(cfg.ising.field_steps)
    sites = float(math.prod(float(x) for x in cfg.ising.lattice))
    workers = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    est = Estimate("loop set")
    est.add_memory("loops (float32, both branches)", n * steps * 2 * 4 + n * 3 * 8)
    est.add_memory("lattices (bonds, fields, spins)", sites * 48 * max(1, workers))
    est.add_disk("stored loops", n * steps * 2 * 4 + n * 3 * 8)
    return est


def build_loop_set(cfg: LoopSetConfig, path=None, progress=None, threads: int | None = None) -> LoopSet:
    """Simulate the set (or the chunks still missing from the store at `path`) and return it.

    With ``path=None`` nothing is written. ``progress(done, total)`` is called after each chunk.
    The store is locked while the set is built (a second build on it is refused).
    """
    from contextlib import nullcontext

    from inverscope.core.io import exclusive_lock

    with exclusive_lock(path, "loop set store") if path is not None else nullcontext():
        return _build_loop_set(cfg, path, progress, threads)


def _build_loop_set(cfg: LoopSetConfig, path, progress, threads) -> LoopSet:
    params = cfg.sample_params()
    g = _open(Path(path), cfg) if path is not None else None
    done = g["done"][:] if g is not None else np.zeros(-(-cfg.num_loops // cfg.chunk), bool)
    steps = cfg.ising.field_steps
    m_up = np.empty((cfg.num_loops, steps), np.float32)
    m_down = np.empty_like(m_up)
    t_sim, simulated = 0.0, 0
    for c in range(len(done)):
        s = slice(c * cfg.chunk, min((c + 1) * cfg.chunk, cfg.num_loops))
        if done[c]:
            m_up[s], m_down[s] = g["m_up"][s], g["m_down"][s]
        else:
            t0 = time.perf_counter()
            r = simulate_loops(params[s], cfg.ising, seed=cfg.seed, first_index=s.start, threads=threads)
            t_sim += time.perf_counter() - t0
            simulated += s.stop - s.start
            m_up[s], m_down[s] = r.m_up, r.m_down
            if g is not None:
                g["params"][s], g["m_up"][s], g["m_down"][s] = params[s], r.m_up, r.m_down
                g["done"][c] = True           # last: a crash before this line redoes the chunk
        if progress is not None:
            progress(s.stop, cfg.num_loops)
    if g is not None:
        g.attrs["complete"] = True
    return LoopSet(params, cfg.ising.fields(), m_up, m_down, cfg.model_dump(mode="json"), t_sim, simulated)


def open_loop_set(path) -> LoopSet:
    """Load a complete loop set written by :func:`build_loop_set`."""
    path = Path(path)
    g = _existing(path, "r")
    if not bool(np.all(g["done"][:])):
        raise InverscopeError(f"{path}: loop set is incomplete ({int(np.sum(~g['done'][:]))} chunks missing); "
                              "run the recipe again to finish it")
    return LoopSet(g["params"][:], g["field"][:], g["m_up"][:], g["m_down"][:], dict(g.attrs["config"]))
