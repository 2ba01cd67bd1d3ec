"""Where results go: memory, or OME-Zarr written chunk by chunk with a resume ledger.

A zarr output is built at ``<path>.partial``; finished chunks are recorded in a ledger inside it,
so an interrupted run resumes; only when every chunk is written is the store marked complete and
renamed to ``<path>``.  A path that exists is therefore always a complete result, and an existing
result is replaced (with ``overwrite``) only once its successor is complete -- and only if it is
itself a zarr store: napari-mbdl never deletes a folder or file that is not its kind of output.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

ATTRS_KEY = "napari_mbdl"
LEDGER = ".mbdl_done"
OME_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
OME_ORDER = "tczyx"
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """True for a directory that is a zarr store (v2 or v3) at its top level."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and any((path / name).is_file() for name in _ZARR_MARKERS)


def check_replaceable(path: Path, overwrite: bool, kind: str = "zarr") -> None:
    """Refuse to write where data exists, unless overwriting an output of the same kind was asked for."""
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another path or pass overwrite")
    replaceable = is_zarr_store(path) if kind == "zarr" else path.is_file() and not path.is_symlink()
    if not replaceable:
        what = "a zarr store" if kind == "zarr" else "a file"
        raise OutputExistsError(
            f"{path} exists and is not {what}; napari-mbdl replaces only its own kind of output. Choose another path."
        )


def ome_multiscales(axes: str, scale: Sequence[float], units: Sequence[str | None], name: str) -> list | None:
    """OME-NGFF 0.4 ``multiscales`` metadata, or None where the axes do not fit the spec's t,c,z,y,x order."""
    if not 2 <= len(axes) <= 5 or any(a not in OME_ORDER for a in axes):
        return None
    if [OME_ORDER.index(a) for a in axes] != sorted(OME_ORDER.index(a) for a in axes) or len(set(axes)) != len(axes):
        return None
    ome_axes = []
    for axis, unit in zip(axes, units):
        entry = {"name": axis, "type": OME_AXIS_TYPES[axis]}
        if unit and OME_AXIS_TYPES[axis] != "channel":
            entry["unit"] = unit
        ome_axes.append(entry)
    return [
        {
            "version": "0.4",
            "name": name,
            "axes": ome_axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [float(s) for s in scale]}]}],
        }
    ]


class MemoryOutput:
    """Results kept in a numpy array (small data, plain Python calls)."""

    path = None

    def __init__(self, shape, dtype, chunks):
        self.shape, self.dtype, self.chunks = tuple(shape), np.dtype(dtype), tuple(chunks)
        self.array = np.zeros(self.shape, self.dtype)
        self._done: set[tuple[int, ...]] = set()

    def done_chunks(self) -> set[tuple[int, ...]]:
        return set(self._done)

    def write(self, index, slices, block) -> None:
        self.array[slices] = block
        self._done.add(tuple(index))

    def finalize(self):
        return self.array


def clear_partial(partial: Path) -> None:
    """Remove a leftover ``<path>.partial`` zarr store of an earlier run (refuse anything else)."""
    if partial.exists() or partial.is_symlink():
        if not is_zarr_store(partial):
            raise OutputExistsError(f"{partial} exists and is not a zarr store; move it away first")
        shutil.rmtree(partial)


def commit_store(partial: Path, path: Path) -> None:
    """Move a complete ``partial`` zarr store to ``path``; an existing zarr store there goes only now.

    Callers check with :func:`check_replaceable` that ``path`` may be replaced.
    """
    replaced = None
    if path.exists():
        replaced = path.with_name(f"{path.name}.replaced-{os.getpid()}")
        os.replace(path, replaced)
    os.replace(partial, path)
    if replaced is not None and is_zarr_store(replaced):
        shutil.rmtree(replaced, ignore_errors=True)


class ZarrOutput:
    """An OME-Zarr (zarr v2 format, NGFF 0.4) output written chunk by chunk."""

    def __init__(
        self,
        path: str | os.PathLike,
        shape,
        dtype,
        chunks,
        *,
        axes: str,
        scale,
        units,
        run_fingerprint: dict,
        overwrite: bool = False,
        extra_attrs: dict | None = None,
        protected: Sequence[str | os.PathLike] = (),
    ):
        import zarr
        from numcodecs import Blosc

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.shape, self.dtype, self.chunks = tuple(shape), np.dtype(dtype), tuple(chunks)
        for other in protected:
            if other is not None and _same_or_inside(self.path, other):
                raise InputError(f"the output {self.path} is (or contains) the input {other}; choose another output path")
        check_replaceable(self.path, overwrite)
        if self.partial.exists() and not is_zarr_store(self.partial):
            raise OutputExistsError(f"{self.partial} exists and is not a zarr store; move it away first")
        fingerprint = {**run_fingerprint, "shape": list(self.shape), "chunks": list(self.chunks), "dtype": self.dtype.str}
        group = None
        if self.partial.exists():
            try:
                group = zarr.open_group(str(self.partial), mode="r+")
                previous = group.attrs.get(ATTRS_KEY, {}).get("run")
            except Exception:  # an unreadable leftover is as good as none
                previous = None
            if previous != _jsonable(fingerprint):
                log.warning("discarding an unfinished output with other settings at %s", self.partial)
                shutil.rmtree(self.partial)
                group = None
        if group is None:
            group = zarr.open_group(str(self.partial), mode="w", zarr_format=2)
            group.create_array(
                "0",
                shape=self.shape,
                chunks=self.chunks,
                dtype=self.dtype,
                fill_value=0,
                compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
                config={"write_empty_chunks": True},
            )
            attrs: dict[str, Any] = {
                ATTRS_KEY: {
                    "complete": False,
                    "run": _jsonable(fingerprint),
                    "axes": axes,
                    "scale": [float(s) for s in scale],
                    "units": list(units),
                    **(extra_attrs or {}),
                }
            }
            multiscales = ome_multiscales(axes, scale, units, self.path.stem)
            if multiscales is not None:
                attrs["multiscales"] = multiscales
            group.attrs.update(_jsonable(attrs))
            (self.partial / LEDGER).mkdir(exist_ok=True)
        self.overwrite = overwrite
        self.group = group
        self.array = group["0"]

    def done_chunks(self) -> set[tuple[int, ...]]:
        ledger = self.partial / LEDGER
        if not ledger.exists():
            return set()
        return {tuple(int(i) for i in name.split(".")) for name in os.listdir(ledger)}

    def write(self, index, slices, block) -> None:
        write_chunk(self.array, self.partial, index, slices, block)

    def finalize(self):
        attrs = dict(self.group.attrs[ATTRS_KEY])
        attrs["complete"] = True
        attrs.pop("run", None)
        self.group.attrs[ATTRS_KEY] = attrs
        shutil.rmtree(self.partial / LEDGER, ignore_errors=True)
        check_replaceable(self.path, self.overwrite)  # again: the path may have changed during the run
        commit_store(self.partial, self.path)
        return open_zarr_result(self.path)


def write_chunk(array, partial: Path, index, slices, block) -> None:
    """Write one chunk, then record it in the ledger (a crash in between only recomputes it)."""
    array[slices] = block
    (Path(partial) / LEDGER / ".".join(str(i) for i in index)).touch()


def open_zarr_result(path: str | os.PathLike):
    """A complete napari-mbdl output as a lazy dask array."""
    import dask.array as da
    import zarr

    return da.from_zarr(zarr.open_array(str(Path(path) / "0"), mode="r"))


def write_tiff_from_zarr(zarr_path: Path, tiff_path: Path, *, axes: str, scale, overwrite: bool) -> None:
    """Stream a complete zarr result into a TIFF, plane by plane, atomically."""
    import tifffile
    import zarr

    check_replaceable(tiff_path, overwrite, kind="file")
    array = zarr.open_array(str(Path(zarr_path) / "0"), mode="r")
    temporary = tiff_path.with_name(tiff_path.name + ".partial")
    n_planes = int(np.prod(array.shape[:-2])) if array.ndim > 2 else 1

    def planes():
        for index in np.ndindex(*array.shape[:-2]):
            yield np.asarray(array[index])

    tifffile.imwrite(
        temporary,
        planes() if n_planes > 1 else np.asarray(array[...]),
        shape=array.shape,
        dtype=array.dtype,
        bigtiff=array.nbytes > 2**31,
        metadata={"axes": axes.upper()} if axes else None,
        resolution=(1 / scale[-1], 1 / scale[-2]) if len(scale) >= 2 and scale[-1] and scale[-2] else None,
        photometric="minisblack",
    )
    os.replace(temporary, tiff_path)


def _same_or_inside(output, source) -> bool:
    """True when writing ``output`` would replace ``source`` or a folder holding it."""
    try:
        out, src = Path(output).resolve(), Path(source).resolve()
    except (TypeError, OSError):
        return False
    return out == src or out in src.parents


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
