"""npe2 reader and writer contributions (thin: the work is in :mod:`napari_mbdl.io.arrays` and the engine)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_mbdl.errors import MBDLError

_AXIS_NAMES = {"t": "t", "c": "c", "z": "z", "y": "y", "x": "x", "e": "energy"}


def layer_kwargs(labeled) -> dict:
    """napari layer keyword arguments (name, scale, axis labels, units, metadata) for a LabeledArray."""
    meta: dict = {"name": labeled.name, "metadata": {"source": str(labeled.path) if labeled.path else None, **labeled.attrs}}
    if labeled.axes:
        meta["axis_labels"] = tuple(_AXIS_NAMES.get(a, a) for a in labeled.axes)
        meta["metadata"]["axes"] = labeled.axes
    if labeled.scale and len(labeled.scale) == labeled.ndim:
        meta["scale"] = tuple(float(s) if s else 1.0 for s in labeled.scale)
    if labeled.units and len(labeled.units) == labeled.ndim and all(labeled.units):
        meta["units"] = tuple(labeled.units)
    return meta


def lazy(data):
    """A dask view of a zarr/memmap array so napari reads only what it shows."""
    import dask.array as da

    if isinstance(data, da.Array) or (isinstance(data, np.ndarray) and not isinstance(data, np.memmap)):
        return data
    return da.from_array(data, chunks=getattr(data, "chunks", "auto"), asarray=True, fancy=False)


def get_reader(path):
    """Reader for ``.zarr`` / OME-Zarr directories and TIFF stacks, lazily, with axis metadata."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    lowered = path.rstrip("/").lower()
    if not lowered.endswith((".zarr", ".tif", ".tiff")):
        return None
    if lowered.endswith(".zarr") and not os.path.isdir(path):
        return None
    return read_datacube


def read_layers(path, open_labeled, to_layers) -> list:
    """Shared body of the npe2 readers: open lazily, or say why not in a notification.

    ``open_labeled(path) -> LabeledArray``; ``to_layers(labeled) -> list of LayerDataTuples``.
    """
    from napari.utils.notifications import show_error

    if isinstance(path, list):
        path = path[0]
    try:
        labeled = open_labeled(path)
    except MBDLError as error:
        show_error(f"napari-mbdl could not open {Path(path).name}: {error}")
        return [(None,)]  # napari's "nothing to add" sentinel: the message above says why
    return to_layers(labeled)


def read_datacube(path):
    from napari_mbdl.io.arrays import open_array

    return read_layers(path, open_array, _datacube_layers)


def _datacube_layers(labeled) -> list:
    meta = layer_kwargs(labeled)
    if labeled.axes and labeled.axes.endswith("c") and labeled.shape[-1] in (3, 4) and labeled.dtype == np.uint8:
        meta["rgb"] = True
    return [(lazy(labeled.data), meta, "image")]


def write_ome_zarr(path: str, layer_data: list) -> list[str]:
    """Write image layers as OME-Zarr, streaming chunk by chunk, atomically (``.partial`` then rename).

    One layer goes to ``path``; several go to ``path/<layer name>.zarr``.  An existing zarr store
    is replaced only once the new one is complete; anything else at ``path`` is refused.
    """
    from napari_mbdl.io.writing import write_array

    target = Path(path)
    written = []
    many = len(layer_data) > 1
    if many:
        target.mkdir(parents=True, exist_ok=True)
    for data, meta, _layer_type in layer_data:
        out = target / f"{meta.get('name', 'image')}.zarr" if many else target
        labels = meta.get("axis_labels")
        axes = "".join(str(a)[0].lower() for a in labels) if labels else None
        if axes is not None and len(set(axes)) != len(axes):
            axes = None
        data = data[0] if meta.get("multiscale") else data
        units = tuple(str(u) for u in meta["units"]) if meta.get("units") is not None else None
        write_array(data, out, axes=axes, scale=meta.get("scale"), units=units, overwrite=True,
                    attrs={"layer_metadata": _plain(meta.get("metadata", {}))})
        written.append(str(out))
    return written


def _plain(value):
    """Keep only JSON-friendly metadata."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if _plain(v) is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return None
