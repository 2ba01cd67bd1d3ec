"""The engine's errors live in :mod:`napari_mbdl.errors` (importable without the engine)."""

from napari_mbdl.errors import DeviceMemoryError, InputError, MBDLError, OutputExistsError, RunCancelled

__all__ = ["DeviceMemoryError", "InputError", "MBDLError", "OutputExistsError", "RunCancelled"]
