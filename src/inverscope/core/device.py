"""Device choice and a description of the machine."""

from __future__ import annotations

import os
import platform

import torch

from inverscope.core.errors import field_error


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise field_error("device", name, "use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise field_error("device", name, "CUDA is not available on this machine; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise field_error("device", name, "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def machine_info() -> dict:
    """Versions, threads and CUDA devices, for `inverscope info` and result metadata."""
    import inverscope

    info = {
        "inverscope": inverscope.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    for mod in ("numpy", "ase", "zarr", "pydantic"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "not installed"
    return info
