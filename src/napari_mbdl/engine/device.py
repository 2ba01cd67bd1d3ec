"""Device choice (cuda > mps > cpu), memory budgets and out-of-memory detection.

torch is imported only when a torch operation actually runs.
"""

from __future__ import annotations

import gc
import os
import re
import sys

from napari_mbdl.errors import InputError

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(value: str | int | float | None) -> int | None:
    """``"2GB"`` -> 2_000_000_000; numbers pass through; None stays None."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    match = _SIZE.match(value)
    if not match or match.group(2) is not None and match.group(2).lower() not in _UNITS:
        raise InputError(f"cannot read the memory size {value!r}; write it like 512MB or 2GB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def resolve_device(device: str | None = "auto") -> str:
    """Return the torch device name to use: ``auto`` picks cuda, then mps, then cpu."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for, but no CUDA GPU is available here; use --device cpu")
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was asked for, but Apple's Metal backend is not available here")
        return device
    if device == "cpu":
        return device
    raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def memory_budget(device: str, requested: str | int | None = None) -> int:
    """Bytes a run may plan its tiles for on ``device``.

    An explicit request wins; otherwise the ``MBDL_MEMORY_BUDGET`` environment variable; otherwise
    60% of free GPU memory, or a quarter of available RAM capped at 2 GiB on the CPU.
    """
    explicit = parse_size(requested) or parse_size(os.environ.get("MBDL_MEMORY_BUDGET"))
    if explicit:
        return explicit
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    if device == "mps":
        return 2 * 2**30
    import psutil

    return int(min(psutil.virtual_memory().available * 0.25, 2 * 2**30))


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors, without importing torch."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_device_memory() -> None:
    """Give cached GPU memory back to the driver (no-op without torch or a GPU)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()
