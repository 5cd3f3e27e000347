"""Resource guards: a job estimates the memory and disk it needs from its config and
refuses, with the numbers, before it starts when the machine does not have them.

Estimates are upper bounds of the large arrays (transmission functions, probe batches,
results, stored patterns), not of Python's overhead; they exist to stop a typo
(``sampling_angstrom: 1e-6``, ``num_samples: 10000000000``) from running into the
OOM killer or a full disk hours later. ``--no-resource-check`` skips the refusal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from inverscope.core.errors import InverscopeError

class ResourceError(InverscopeError):
    """A job would need more memory or disk than this machine has."""


def available_memory_bytes() -> int:
    """Memory available to new allocations [bytes] (psutil, else sysconf)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**62


def human_bytes(n: float) -> str:
    """`n` bytes as B, KiB, MiB, GiB, TiB or PiB with three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


@dataclass
class Estimate:
    """Memory and disk a job needs [bytes], with the largest contributors named."""

    job: str
    memory_bytes: float = 0.0
    disk_bytes: float = 0.0
    memory_parts: dict[str, float] = field(default_factory=dict)
    disk_parts: dict[str, float] = field(default_factory=dict)

    def add_memory(self, name: str, nbytes: float) -> None:
        self.memory_bytes += float(nbytes)
        self.memory_parts[name] = self.memory_parts.get(name, 0.0) + float(nbytes)

    def add_disk(self, name: str, nbytes: float) -> None:
        self.disk_bytes += float(nbytes)
        self.disk_parts[name] = self.disk_parts.get(name, 0.0) + float(nbytes)

    def as_dict(self) -> dict:
        return {"memory_bytes": self.memory_bytes, "disk_bytes": self.disk_bytes,
                "memory_parts": dict(self.memory_parts), "disk_parts": dict(self.disk_parts)}

    @staticmethod
    def _largest(parts: dict) -> str:
        name, value = max(parts.items(), key=lambda kv: kv[1]) if parts else ("", 0)
        return f"; largest: {name} {human_bytes(value)}" if name else ""

    def check(self, disk_path=None, memory_fraction: float = 0.9) -> None:
        """Raise :class:`ResourceError` when memory or disk at `disk_path` would not suffice."""
        avail = available_memory_bytes()
        if self.memory_bytes > memory_fraction * avail:
            raise ResourceError(f"{self.job}: needs about {human_bytes(self.memory_bytes)} of memory, this machine has "
                                f"{human_bytes(avail)} available{self._largest(self.memory_parts)}; reduce the sizes in the config "
                                "or pass --no-resource-check to try anyway")
        if disk_path is not None and self.disk_bytes > 0:
            from inverscope.core.io import free_disk_bytes

            free = free_disk_bytes(disk_path)
            if self.disk_bytes > free:
                raise ResourceError(f"{self.job}: needs up to {human_bytes(self.disk_bytes)} of disk for {disk_path}, "
                                    f"{human_bytes(free)} free there{self._largest(self.disk_parts)}; reduce the sizes in the config, free space, "
                                    "or pass --no-resource-check to try anyway")


def multislice_memory(est: Estimate, gpts, num_slices: int, num_atoms: int, batch_probes: int,
                      cached_configs: int = 1) -> None:
    """Add the multislice working set to `est`: transmission functions (complex64, per cached
    configuration), a batch of probe waves with FFT scratch, and the atoms with their potentials."""
    n = float(gpts[0]) * float(gpts[1])
    est.add_memory("transmission functions", n * 8 * max(1, num_slices) * max(1, cached_configs))
    est.add_memory("probe waves", n * 8 * 3 * max(1, batch_probes))
    est.add_memory("atoms", float(num_atoms) * 256)


__all__ = ["Estimate", "ResourceError", "available_memory_bytes", "human_bytes", "multislice_memory"]
