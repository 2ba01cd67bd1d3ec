"""Open arrays lazily from numpy, dask, zarr (v2/v3, OME-Zarr) or TIFF, with their axis metadata.

Everything returned reads lazily (``array[slices]``), so the engine can stream data far larger
than memory.  Problems are reported as :class:`~napari_mbdl.errors.InputError` with a message a
person can act on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.errors import InputError

SUPPORTED_KINDS = "biuf"  # bool, signed/unsigned integers, floats


@dataclass
class LabeledArray:
    """An array-like with the metadata napari-mbdl carries along.

    Attributes
    ----------
    data : array-like
        numpy, dask or zarr array (anything with ``shape``, ``dtype`` and slicing).
    axes : str or None
        One letter per axis, e.g. ``"tzyx"`` or ``"yxc"`` (``c`` doubles as energy for XRF cubes).
    scale, units : tuple or None
        Physical size and unit of one step along each axis.
    path : Path or None
        File the data came from (outputs must never be written there).
    attrs : dict
        Other metadata (e.g. energy calibration, optics).
    """

    data: Any
    axes: str | None = None
    scale: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    name: str = "array"
    path: Path | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    def __getitem__(self, item):
        return self.data[item]


def open_array(source, axes: str | None = None, *, allow_missing_chunks: bool = False) -> LabeledArray:
    """Open ``source`` lazily and check that it can be computed on.

    Parameters
    ----------
    source : str, Path, numpy/dask/zarr array, zarr group or LabeledArray
        Paths may name a ``.zarr`` / ``.ome.zarr`` directory, a ``.tif``/``.tiff`` file or ``.npy``.
    axes : str, optional
        Axis letters, overriding what the file says.
    allow_missing_chunks : bool
        Zarr stores written sparsely omit chunks equal to the fill value; by default a missing
        chunk is reported, because it usually means an interrupted copy.

    Returns
    -------
    LabeledArray
    """
    labeled = _open(source, allow_missing_chunks)
    if axes is not None:
        if len(axes) != labeled.ndim:
            raise InputError(f"axes {axes!r} name {len(axes)} axes, but the data has {labeled.ndim} ({labeled.shape})")
        labeled.axes = axes
    check_array(labeled)
    return labeled


def check_array(array: LabeledArray | Any, what: str = "input") -> None:
    """Refuse empty arrays and dtypes that cannot be computed on (complex, object, strings)."""
    shape = tuple(array.shape)
    dtype = np.dtype(array.dtype)
    if len(shape) == 0:
        raise InputError(f"the {what} is a single number, not an image")
    if any(n == 0 for n in shape):
        raise InputError(f"the {what} is empty (shape {shape})")
    if dtype.kind not in SUPPORTED_KINDS:
        raise InputError(f"the {what} has dtype {dtype}, which cannot be processed; use integers or floats")


def _open(source, allow_missing_chunks: bool) -> LabeledArray:
    if isinstance(source, LabeledArray):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), allow_missing_chunks)
    import zarr

    if isinstance(source, zarr.Group):
        return _open_zarr_group(source, None, allow_missing_chunks)
    if isinstance(source, zarr.Array):
        _check_zarr_chunks(source, "the zarr array", allow_missing_chunks)
        return LabeledArray(source, name="zarr")
    if hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
        return LabeledArray(source, name=getattr(source, "name", None) or "array")
    try:
        return LabeledArray(np.asarray(source), name="array")
    except Exception as error:
        raise InputError(f"cannot use {type(source).__name__} as an image: {error}") from None


def _open_path(path: Path, allow_missing_chunks: bool) -> LabeledArray:
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = f" (an unfinished run left {partial.name}; run it again to resume)" if partial.exists() else ""
        raise InputError(f"{path} does not exist{hint}")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zarr":
        return _open_zarr_path(path, allow_missing_chunks)
    if suffix in (".tif", ".tiff"):
        return _open_tiff(path)
    if suffix == ".npy":
        try:
            return LabeledArray(np.load(path, mmap_mode="r"), name=path.stem, path=path)
        except Exception as error:
            raise InputError(f"cannot read {path.name}: {error}") from None
    raise InputError(f"cannot read {path.name}: napari-mbdl reads .zarr directories, .tif/.tiff and .npy files")


def _open_zarr_path(path: Path, allow_missing_chunks: bool) -> LabeledArray:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputError(f"{path} is not a readable zarr store: {error}") from None
    if isinstance(node, zarr.Array):
        _check_zarr_chunks(node, str(path), allow_missing_chunks)
        return LabeledArray(node, name=_stem(path), path=path, attrs=dict(node.attrs))
    return _open_zarr_group(node, path, allow_missing_chunks)


def _open_zarr_group(group, path: Path | None, allow_missing_chunks: bool) -> LabeledArray:
    import zarr

    attrs = dict(group.attrs)
    ours = attrs.get("napari_mbdl", {})
    where = str(path) if path is not None else "the zarr group"
    if ours and not ours.get("complete", False):
        raise InputError(f"{where} is an unfinished napari-mbdl result (the run was interrupted); run it again to finish")
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    axes = scale = units = None
    if multiscales:
        first = multiscales[0]
        dataset = first["datasets"][0]
        array_path = dataset["path"]
        ome_axes = first.get("axes")
        if ome_axes:
            names = [a["name"] if isinstance(a, dict) else a for a in ome_axes]
            if all(len(n) == 1 for n in names):
                axes = "".join(names)
            units = tuple((a.get("unit") if isinstance(a, dict) else None) for a in ome_axes)
        for transform in dataset.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                scale = tuple(float(s) for s in transform["scale"])
    else:
        arrays = sorted(name for name, _ in group.arrays())
        if not arrays:
            raise InputError(f"{where} holds no array")
        array_path = "0" if "0" in arrays else arrays[0]
    try:
        array = group[array_path]
    except KeyError:
        raise InputError(f"{where} names the array {array_path!r} in its metadata, but it is missing") from None
    if not isinstance(array, zarr.Array):
        raise InputError(f"{where}/{array_path} is not an array")
    _check_zarr_chunks(array, where, allow_missing_chunks)
    if ours:
        axes = ours.get("axes", axes)
        scale = tuple(ours["scale"]) if ours.get("scale") else scale
        units = tuple(ours["units"]) if ours.get("units") else units
    extra = {k: v for k, v in ours.items() if k not in ("axes", "scale", "units", "complete", "run")}
    if axes is not None and len(axes) != array.ndim:
        axes = None
    return LabeledArray(array, axes=axes, scale=scale, units=units, name=_stem(path) if path else "zarr", path=path, attrs=extra)


def _check_zarr_chunks(array, where: str, allow_missing_chunks: bool) -> None:
    if allow_missing_chunks:
        return
    try:
        stored, expected = array.nchunks_initialized, array.nchunks
    except Exception:  # stores that cannot list keys cannot be checked
        return
    if stored < expected:
        raise InputError(
            f"{where} is missing {expected - stored} of {expected} chunks (an interrupted copy?); "
            "missing chunks would read as zeros. Pass allow_missing_chunks if the store was written sparsely."
        )


def _open_tiff(path: Path) -> LabeledArray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.lower()
            shape = series.shape
            imagej = tif.imagej_metadata or {}
            description = tif.pages[0].description if tif.pages else ""
        try:
            data = tifffile.memmap(path, mode="r")
        except Exception:  # compressed or tiled: read through tifffile's zarr store, still lazily
            import zarr

            data = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
            if not hasattr(data, "shape"):  # a pyramid: take full resolution
                data = data["0"]
    except Exception as error:
        raise InputError(f"cannot read {path.name} as TIFF: {error}") from None
    if tuple(data.shape) != tuple(shape) and hasattr(data, "reshape"):
        data = data.reshape(shape)
    axes = _tiff_axes(axes)
    attrs = {}
    scale = None
    if description.startswith("{"):
        try:
            attrs = json.loads(description)
        except ValueError:
            attrs = {}
    if imagej.get("spacing") and axes and "z" in axes:
        scale = tuple(float(imagej["spacing"]) if a == "z" else 1.0 for a in axes)
    return LabeledArray(data, axes=axes if axes and len(axes) == len(shape) else None, scale=scale, name=path.stem, path=path, attrs=attrs)


def _tiff_axes(axes: str) -> str | None:
    # tifffile's letters: q = unknown, s = samples (colour), i = image sequence
    mapped = axes.replace("s", "c").replace("i", "t").replace("q", "t")
    return mapped if len(set(mapped)) == len(mapped) else None


def _stem(path: Path | None) -> str:
    if path is None:
        return "array"
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
