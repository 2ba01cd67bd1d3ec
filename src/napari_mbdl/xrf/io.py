"""Reading and writing MA-XRF cubes: Lispix .rpl/.raw, HDF5 (PyXRF / XRF-Maps layouts), zarr / OME-Zarr.

Every reader is lazy (memory-mapped or chunked) and returns a
:class:`~napari_mbdl.io.arrays.LabeledArray` whose ``axes`` say where the energy axis is (``c``)
and whose ``attrs["xrf_energy"]`` holds the calibration ``{"offset_keV", "gain_keV"}`` when the
file has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.io.arrays import LabeledArray, open_array

XRF_SUFFIXES = (".rpl", ".raw", ".h5", ".hdf5", ".hdf")


def read_cube(path) -> LabeledArray:
    """Open an XRF cube lazily from .rpl/.raw, .h5/.hdf5 or .zarr (energy calibration in ``attrs``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".rpl", ".raw"):
        return read_ripple(path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return read_hdf5(path)
    return open_array(path)


# -- Lispix ripple ------------------------------------------------------------------------------
_RIPPLE_TYPES = {("unsigned", 1): "u1", ("unsigned", 2): "u2", ("unsigned", 4): "u4", ("signed", 1): "i1",
                 ("signed", 2): "i2", ("signed", 4): "i4", ("signed", 8): "i8", ("float", 4): "f4", ("float", 8): "f8"}


def parse_ripple_header(text: str) -> dict:
    """Key/value pairs of a Lispix .rpl header (whitespace separated, one per line; the ``key value`` line skipped)."""
    header = {}
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts[0].strip().lower(), parts[1].strip()
        if key == "key":
            continue
        header[key] = value
    return header


def read_ripple(path) -> LabeledArray:
    """Memory-map a Lispix .rpl/.raw pair (e.g. Bruker M6 exports, 'record-by vector')."""
    path = Path(path)
    rpl = path.with_suffix(".rpl")
    raw = path.with_suffix(".raw")
    if not rpl.exists() or not raw.exists():
        raise InputError(f"a Lispix cube needs both {rpl.name} and {raw.name} side by side")
    header = parse_ripple_header(rpl.read_text(errors="replace"))
    try:
        width, height, depth = (int(header[k]) for k in ("width", "height", "depth"))
        offset = int(header.get("offset", 0))
        length = int(header["data-length"])
        kind = header.get("data-type", "unsigned").lower()
    except (KeyError, ValueError) as error:
        raise InputError(f"{rpl.name} lacks a valid {error} entry (width, height, depth, data-length)") from None
    if (kind, length) not in _RIPPLE_TYPES:
        raise InputError(f"{rpl.name}: unsupported data-type {kind!r} with data-length {length}")
    dtype = np.dtype(_RIPPLE_TYPES[(kind, length)])
    order = header.get("byte-order", "little-endian").lower()
    dtype = dtype.newbyteorder(">" if order.startswith("big") else "<")
    record_by = header.get("record-by", "vector").lower()
    expected = offset + width * height * depth * length
    if raw.stat().st_size < expected:
        raise InputError(f"{raw.name} holds {raw.stat().st_size} bytes but {rpl.name} describes {expected}")
    if record_by == "image":
        data = np.memmap(raw, dtype=dtype, mode="r", offset=offset, shape=(depth, height, width))
        axes = "cyx"
    else:
        data = np.memmap(raw, dtype=dtype, mode="r", offset=offset, shape=(height, width, depth))
        axes = "yxc"
    attrs = {}
    calibration = _ripple_calibration(header)
    if calibration is not None:
        attrs["xrf_energy"] = calibration
    return LabeledArray(data, axes=axes, name=rpl.stem, path=raw, attrs=attrs)


def _ripple_calibration(header):
    scale = header.get("ev-per-chan") or header.get("depth-scale")
    if scale is None:
        return None
    units = header.get("depth-units", "eV" if "ev-per-chan" in header else "keV").lower()
    factor = 1e-3 if units == "ev" else 1.0
    origin = float(header.get("depth-origin", 0.0))
    return {"offset_keV": origin * factor, "gain_keV": float(scale) * factor}


def write_ripple(cube: np.ndarray, path, calibration=None) -> Path:
    """Write a (y, x, energy) cube as a Lispix .rpl/.raw pair (record-by vector)."""
    path = Path(path).with_suffix(".rpl")
    cube = np.ascontiguousarray(cube)
    kinds = {"u": "unsigned", "i": "signed", "f": "float"}
    lines = ["key\tvalue", f"width\t{cube.shape[1]}", f"height\t{cube.shape[0]}", f"depth\t{cube.shape[2]}",
             "offset\t0", f"data-length\t{cube.dtype.itemsize}", f"data-type\t{kinds[cube.dtype.kind]}",
             "byte-order\tlittle-endian", "record-by\tvector"]
    if calibration is not None:
        lines += [f"ev-per-chan\t{calibration.gain * 1000:.6f}", f"depth-origin\t{calibration.offset * 1000:.6f}",
                  "depth-units\teV"]
    path.write_text("\n".join(lines) + "\n")
    cube.astype(cube.dtype.newbyteorder("<"), copy=False).tofile(path.with_suffix(".raw"))
    return path


# -- HDF5 ---------------------------------------------------------------------------------------
# (dataset, energy axis position) of the common layouts
_HDF5_LAYOUTS = (
    ("xrfmap/detsum/counts", 2),   # PyXRF: rows, columns, channels
    ("MAPS/mca_arr", 0),           # XRF-Maps (Argonne): channels, rows, columns
)


def read_hdf5(path) -> LabeledArray:
    """Open the spectrum cube of an HDF5 file lazily (PyXRF, XRF-Maps, or the only 3-D dataset)."""
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path.name} is not a readable HDF5 file: {error}") from None
    dataset, energy_axis = None, 2
    for name, axis in _HDF5_LAYOUTS:
        if name in handle:
            dataset, energy_axis = handle[name], axis
            break
    if dataset is None:
        cubes = []
        handle.visititems(lambda n, obj: cubes.append(n) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
        if len(cubes) != 1:
            handle.close()
            found = ", ".join(cubes) or "none"
            raise InputError(f"{path.name}: expected one 3-D spectrum dataset (PyXRF or XRF-Maps layout); found {found}")
        dataset = handle[cubes[0]]
        energy_axis = int(np.argmax(dataset.shape))
    axes = "".join(_axis_letters(energy_axis))
    attrs = {}
    calibration = _hdf5_calibration(handle, dataset)
    if calibration is not None:
        attrs["xrf_energy"] = calibration
    return LabeledArray(dataset, axes=axes, name=path.stem, path=path, attrs=attrs)


def _axis_letters(energy_axis):
    letters = iter("yx")
    return ["c" if i == energy_axis else next(letters) for i in range(3)]


def _hdf5_calibration(handle, dataset):
    for source in (dataset.attrs, dataset.parent.attrs):
        if "offset_keV" in source and "gain_keV" in source:
            return {"offset_keV": float(source["offset_keV"]), "gain_keV": float(source["gain_keV"])}
    if "MAPS/energy_calib" in handle:  # offset, slope (, quadratic) in keV
        values = np.asarray(handle["MAPS/energy_calib"]).ravel()
        if values.size >= 2:
            return {"offset_keV": float(values[0]), "gain_keV": float(values[1])}
    for name in ("MAPS/energy", "xrfmap/detsum/energy", "energy"):
        if name in handle:
            energies = np.asarray(handle[name], dtype=np.float64).ravel()
            if energies.size > 1:
                scale = 1e-3 if energies[-1] > 200 else 1.0  # eV vs keV
                gain, offset = np.polyfit(np.arange(energies.size), energies * scale, 1)
                return {"offset_keV": float(offset), "gain_keV": float(gain)}
    return None


def write_hdf5(cube: np.ndarray, path, calibration=None) -> Path:
    """Write a (y, x, energy) cube in the PyXRF layout (``xrfmap/detsum/counts``) with its calibration."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as handle:
        chunks = (min(16, cube.shape[0]), min(16, cube.shape[1]), cube.shape[2])
        data = handle.create_dataset("xrfmap/detsum/counts", data=cube, chunks=chunks)
        if calibration is not None:
            data.attrs["offset_keV"] = calibration.offset
            data.attrs["gain_keV"] = calibration.gain
    return path


# -- zarr ---------------------------------------------------------------------------------------
def write_cube_zarr(cube, path, calibration, overwrite: bool = True, chunk: int = 64):
    """Write a (y, x, energy) cube as OME-Zarr (chunks of whole spectra) with its calibration, via the engine."""
    from napari_mbdl.engine.progress import run_steps
    from napari_mbdl.engine.run import Operation, run_blocks

    dtype = np.dtype(cube.dtype)
    n_channels = int(cube.shape[-1])
    op = Operation(key=f"xrf-copy/{dtype.str}", make=_identity, out_core_shape=(n_channels,), out_dtype=dtype.str,
                   bytes_per_voxel=3 * dtype.itemsize)
    steps = run_blocks(op, cube, n_tiled=2, axes="yxc", tile=(chunk, chunk), out=Path(path), overwrite=overwrite,
                       out_core_axes="c", check_finite=False, stage="write cube",
                       attrs={"xrf_energy": calibration.as_metadata()})
    return run_steps(steps)


def _identity(device):
    return _copy


def _copy(block):
    return block


def cube_layer(labeled: LabeledArray) -> tuple:
    """A napari image LayerDataTuple showing the cube with energy as the slider axis (lazy transpose)."""
    from napari_mbdl.io.napari_io import lazy

    axes = labeled.axes or "yxc"
    energy_axis = axes.index("c") if "c" in axes else 2
    data = lazy(labeled.data)
    if energy_axis != 0:
        import dask.array as da

        order = [energy_axis] + [a for a in range(3) if a != energy_axis]
        data = da.asarray(data).transpose(order)
    metadata = {"axes": "cyx", "source": str(labeled.path) if labeled.path else None}
    if "xrf_energy" in labeled.attrs:
        metadata["xrf_energy"] = dict(labeled.attrs["xrf_energy"])
    return (data, {"name": labeled.name, "metadata": metadata, "axis_labels": ("energy", "y", "x")}, "image")
