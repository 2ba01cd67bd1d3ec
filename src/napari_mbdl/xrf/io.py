"""Reading and writing MA-XRF cubes: Lispix .rpl/.raw, HDF5 (PyXRF / XRF-Maps layouts), Bruker .bcf, zarr / OME-Zarr.

Every reader is lazy (memory-mapped or chunked) and returns a
:class:`~napari_mbdl.io.arrays.LabeledArray` whose ``axes`` say where the energy axis is (``c``)
and whose ``attrs["xrf_energy"]`` holds the calibration ``{"offset_keV", "gain_keV"}`` when the
file has one.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from collections import OrderedDict
from math import ceil
from pathlib import Path

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.io.arrays import LabeledArray, open_array

XRF_SUFFIXES = (".rpl", ".raw", ".h5", ".hdf5", ".hdf", ".bcf")

_logger = logging.getLogger(__name__)


def read_cube(path) -> LabeledArray:
    """Open an XRF cube lazily from .rpl/.raw, .h5/.hdf5, .bcf or .zarr (energy calibration in ``attrs``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".rpl", ".raw"):
        return read_ripple(path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return read_hdf5(path)
    if suffix == ".bcf":
        return read_bcf(path)
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


# -- Bruker .bcf --------------------------------------------------------------------------------
BCF_EXTRA = 'pip install "napari-mbdl[bcf]"'
_BCF_CHUNK_BYTES = 32 * 2**20  # decoded bytes per dask chunk (a band of whole pixel lines)
_BCF_CACHED_BANDS = 3          # decoded bands kept, so the tiles of one band decode it once
_BCF_PIXEL = struct.Struct("<IHHIHHHI")  # x, channels, channels here, ?, packing flag, ?, pulses, data size
_BCF_STREAM_HEADER = 0x1A0     # the pixel stream starts with height, width (int32) in a header this long
_BCF_PAD = 4096                # zero bytes after a band (unbcf_fast trusts the sizes it reads)
_BCF_SCAN_PIECE = 8 * 2**20    # bytes read at a time while scanning an uncompressed stream
_BCF_SCAN_KEEP = 2**20         # scanned bytes kept before the buffer is trimmed


def read_bcf(path, *, index: int | None = None, downsample: int = 1, cutoff_at_kV=None) -> LabeledArray:
    """Open the spectrum image of a Bruker ``.bcf`` (Esprit: M4 / M6 XRF, SEM-EDS) lazily as (y, x, energy).

    The header, axes and metadata come from rosettasciio's Bruker reader (the optional extra
    ``napari-mbdl[bcf]``); its SEM / overview images are skipped.  The pixel data are decoded on
    access in bands of whole lines (dask chunks of about 32 MB), so opening a large map reads only
    its header and every tile decodes just its own lines.  The energy calibration goes to
    ``attrs["xrf_energy"]`` and the acquisition details (tube / beam kV, detector, times, pixel
    size) to ``attrs["bruker"]``.

    Parameters
    ----------
    index : int, optional
        Which hypermap of a multi-map file (default: the first).
    downsample : int
        Sum ``downsample x downsample`` pixels while decoding.
    cutoff_at_kV : float, "auto" or "zealous", optional
        Crop (or extend) the energy axis, as in rosettasciio.
    """
    path = Path(path)
    try:
        from rsciio.bruker import file_reader
    except ImportError:
        raise InputError(f"reading Bruker .bcf files needs rosettasciio: {BCF_EXTRA}") from None
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer))):
        raise InputError(f"index must be a whole number, not {index!r}")
    if isinstance(downsample, bool) or not isinstance(downsample, (int, np.integer)) or downsample < 1:
        raise InputError(f"downsample must be a whole number of at least 1, not {downsample!r}")
    index = None if index is None else int(index)
    downsample = int(downsample)
    truncated = _bcf_truncation(path)
    if truncated:
        raise InputError(f"{path.name} is truncated: {truncated}")
    try:
        signals = file_reader(str(path), lazy=True, select_type="spectrum_image", index=index,
                              downsample=downsample, cutoff_at_kV=cutoff_at_kV)
    except MemoryError:
        raise
    except IndexError as error:
        if index is not None and "index" in str(error):  # rosettasciio lists the indexes it found
            raise InputError(f"{path.name} has no hypermap {index}: {_one_line(error)}") from None
        raise InputError(f"{path.name} is not a readable Bruker .bcf file: {_one_line(error)}") from None
    except Exception as error:  # rosettasciio raises whatever the broken bytes lead to
        short = _bcf_announced_size(path)
        if short:
            raise InputError(f"{path.name} is truncated ({short}): {_one_line(error)}") from None
        raise InputError(f"{path.name} is not a readable Bruker .bcf file: {_one_line(error)}") from None
    if not signals or getattr(signals[0].get("data"), "ndim", 0) != 3:
        raise InputError(f"{path.name} holds no spectrum image (EDS / XRF hypermap)")
    signal = signals[0]
    fallback = signal["data"]
    dtype = np.promote_types(fallback.dtype, np.uint16)  # rosettasciio's guess can be uint8: hot pixels would wrap
    try:
        hypermap = _BcfHypermap(path, index, downsample, tuple(fallback.shape), dtype)
    except InputError:
        raise
    except (ImportError, AttributeError) as error:  # rosettasciio's internals moved: use its own lazy array
        _logger.warning("%s: decoding with rosettasciio's reader in one piece (%s)", path.name, _one_line(error))
        data, used_index = fallback, index
    except MemoryError:
        raise
    except Exception as error:
        raise InputError(f"{path.name} is not a readable Bruker .bcf file: {_one_line(error)}") from None
    else:
        data, used_index = hypermap.to_dask(), hypermap.index
    attrs = {"bruker": _bcf_metadata(signal, used_index, downsample)}
    calibration = _axis_calibration(signal["axes"][-1])
    if calibration is not None:
        attrs["xrf_energy"] = calibration
    return LabeledArray(data, axes="yxc", name=path.stem, path=path, attrs=attrs)


def _bcf_truncation(path: Path) -> str | None:
    """Why the SFS container of a .bcf is cut short (header, file tree or a file's chunks), or None."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(0x14C)
    if head[:8] != b"AAMVHFSS":
        return None  # not a .bcf at all: rosettasciio says so
    if len(head) < 0x14C:
        return f"it ends at byte {size:,}, inside the container header"
    try:
        from rsciio.bruker._api import SFS_reader

        sfs = SFS_reader(str(path))
        files = []

        def walk(tree):
            for node in tree.values():
                walk(node) if isinstance(node, dict) else files.append(node)

        walk(sfs.vfs)
        for item in files:
            pointers = np.asarray(item.pointers)
            if pointers.size != item.size_in_chunks:
                return f"the chunk table of {item.name} is cut off at byte {size:,}"
            if pointers.size:
                last = item.size - (pointers.size - 1) * sfs.usable_chunk
                needed = max(int(pointers[:-1].max(initial=0)) + sfs.usable_chunk, int(pointers[-1]) + last)
                if needed > size:
                    return f"{item.name} needs {needed:,} bytes, the file ends at {size:,}"
    except Exception:  # a damaged tree: rosettasciio's own error says what it found
        return None
    return None


def _bcf_announced_size(path: Path) -> str | None:
    """For an unreadable .bcf: 'N bytes of about M' when it is shorter than its header's chunk count says."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(0x14C)
    if head[:8] != b"AAMVHFSS" or len(head) < 0x14C:
        return None
    (chunksize,) = struct.unpack_from("<I", head, 0x128)
    (n_chunks,) = struct.unpack_from("<I", head, 0x148)
    announced = 0x118 + max(n_chunks - 1, 0) * chunksize
    return f"{size:,} bytes of about {announced:,}" if 0 < size < announced else None


def _one_line(error) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _axis_calibration(axis: dict):
    """``{"offset_keV", "gain_keV"}`` of a rosettasciio energy axis (eV or keV), or None."""
    factor = {"ev": 1e-3, "kev": 1.0}.get(str(axis.get("units") or "").strip().lower())
    scale = axis.get("scale")
    if factor is None or not scale:
        return None
    return {"offset_keV": float(axis.get("offset") or 0.0) * factor, "gain_keV": float(scale) * factor}


def _bcf_metadata(signal: dict, index, downsample: int) -> dict:
    """Acquisition details worth keeping (plain Python values; missing ones left out)."""
    metadata, original = signal.get("metadata") or {}, signal.get("original_metadata") or {}
    instrument = next(iter((metadata.get("Acquisition_instrument") or {}).values()), {}) or {}
    eds = (instrument.get("Detector") or {}).get("EDS") or {}
    sample, general = metadata.get("Sample") or {}, metadata.get("General") or {}
    microscope = original.get("Microscope") or {}
    info = {
        "index": index,
        "downsample": downsample,
        "beam_kV": instrument.get("beam_energy"),  # X-ray tube voltage (XRF) or electron beam energy (SEM)
        "detector": eds.get("detector_type"),
        "elevation_angle_deg": eds.get("elevation_angle"),
        "azimuth_angle_deg": eds.get("azimuth_angle"),
        "real_time_s": eds.get("real_time"),
        "live_time_s": eds.get("live_time"),
        "sample": sample.get("name"),
        "elements": list(sample.get("elements") or []) or None,
        "date": general.get("date"),
        "time": general.get("time"),
    }
    if "DX" in microscope and "DY" in microscope:
        info["pixel_size_um"] = [float(microscope["DY"]) * downsample, float(microscope["DX"]) * downsample]

    def plain(value):
        return value.item() if isinstance(value, np.generic) else value

    return {key: plain(value) for key, value in info.items() if value is not None}


class _BcfHypermap:
    """Array-like over the pixel stream of one .bcf hypermap: slicing decodes only the lines it needs.

    A .bcf stores the pixels line after line, each packed to its own length (and the stream is
    usually zlib-compressed in blocks), so there is no direct way to a line.  The first access scans
    the stream once (pixel headers only) for the byte offset of every line and the position of every
    compressed block; then a band of lines is decompressed alone and decoded by rosettasciio's
    compiled ``unbcf_fast`` parser.
    """

    ndim = 3

    def __init__(self, path: Path, index, downsample: int, shape: tuple, dtype):
        from rsciio.bruker import unbcf_fast  # noqa: F401  (the compiled parser; ImportError -> fallback)
        from rsciio.bruker._api import SFS_reader

        self.path = Path(path)
        self.downsample = downsample
        self.shape = shape
        self.dtype = np.dtype(dtype)
        stat = self.path.stat()
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        sfs = SFS_reader(str(self.path))
        names = [name for name in sfs.vfs.get("EDSDatabase", {}) if name.startswith("SpectrumData")]
        if index is None:  # rosettasciio's choice: the lowest index
            index = min(int(name[len("SpectrumData"):]) for name in names)
        self.index = index
        item = sfs.get_file(f"EDSDatabase/SpectrumData{index}")
        self._check_complete(item, sfs, stat.st_size)
        self.compressed = sfs.compression == "zlib"
        width_out, n_channels = shape[1], shape[2]
        self.band_rows = max(1, _BCF_CHUNK_BYTES // max(1, width_out * n_channels * self.dtype.itemsize))
        self._item = item
        self._lock = threading.Lock()
        self._bands: OrderedDict = OrderedDict()
        self._line_starts = None  # byte offset of every line, and of the stream's end
        self._blocks = None       # compressed blocks: (offset in the SFS file, size), and uncompressed starts
        self._stream_height, self._stream_width = struct.unpack("<ii", self._head())
        if self._stream_height < 0 or self._stream_width < 0:
            raise InputError(f"{self.path.name} is corrupt: its spectrum data claim "
                             f"{self._stream_height} x {self._stream_width} pixels")

    def _check_complete(self, item, sfs, file_size):
        usable = sfs.usable_chunk
        pointers = np.asarray(item.pointers)
        if item.size <= 0:
            raise InputError(f"{self.path.name} holds an empty spectrum stream (SpectrumData{self.index})")
        if pointers.size != item.size_in_chunks:
            raise InputError(f"{self.path.name} is truncated: the chunk table of its spectrum data is cut off")
        last = item.size - (item.size_in_chunks - 1) * usable
        needed = max(int(pointers[:-1].max(initial=0)) + usable, int(pointers[-1]) + last)
        if needed > file_size:
            raise InputError(f"{self.path.name} is truncated: its spectrum data need {needed:,} bytes, "
                             f"the file holds {file_size:,}")

    def _head(self) -> bytes:
        if not self.compressed:
            head = self._item.read_piece(0, 8)
        else:
            block = self._item.read_piece(0x80, 16)
            size = struct.unpack("<I", block[:4])[0] if len(block) == 16 else 0
            try:
                head = zlib.decompressobj().decompress(self._item.read_piece(0x90, size), 8)
            except zlib.error as error:
                message = f"{self.path.name} is corrupt: its spectrum data do not decompress ({error})"
                raise InputError(message) from None
        if len(head) < 8:
            raise InputError(f"{self.path.name} is corrupt: its spectrum data lack a header")
        return head

    # -- dask -----------------------------------------------------------------------------------
    def to_dask(self):
        import dask.array as da
        from dask.base import tokenize

        chunks = (self.band_rows, self.shape[1], self.shape[2])
        name = "bcf-" + tokenize(str(self.path), self._stamp, self.index, self.downsample, self.shape, self.dtype.str)
        return da.from_array(self, chunks=chunks, name=name, asarray=True, fancy=False, lock=False,
                             meta=np.empty((0, 0, 0), dtype=self.dtype))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_lock=None, _bands=OrderedDict(), _item=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        rows = np.arange(self.shape[0])[key[0] if key else slice(None)]
        rest = key[1:]
        if rows.size == 0:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
        low, high = int(rows.min()), int(rows.max()) + 1
        block = self._rows(low, high)
        if rows.ndim == 0:
            return block[int(rows) - low][rest]
        if np.array_equal(rows, np.arange(low, high)):
            return block[(slice(None), *rest)]
        return block[rows - low][(slice(None), *rest)]

    # -- decoding -------------------------------------------------------------------------------
    def _rows(self, low: int, high: int) -> np.ndarray:
        first, last = low // self.band_rows, (high - 1) // self.band_rows
        bands = [self._band(b) for b in range(first, last + 1)]
        block = bands[0] if len(bands) == 1 else np.concatenate(bands)
        start = first * self.band_rows
        return block[low - start:high - start]

    def _band(self, number: int) -> np.ndarray:
        with self._lock:
            if number in self._bands:
                self._bands.move_to_end(number)
                return self._bands[number]
            if self._line_starts is None:
                self._scan()
        band = self._decode(number)
        band.setflags(write=False)
        with self._lock:
            self._bands[number] = band
            while len(self._bands) > _BCF_CACHED_BANDS:
                self._bands.popitem(last=False)
        return band

    def _decode(self, number: int) -> np.ndarray:
        from rsciio.bruker import unbcf_fast

        rows_out = min(self.band_rows, self.shape[0] - number * self.band_rows)
        first = number * self.band_rows * self.downsample
        n_lines = self._line_starts.size - 1
        line_0, line_1 = min(first, n_lines), min(first + rows_out * self.downsample, n_lines)
        band = np.zeros((rows_out, *self.shape[1:]), dtype=np.uint32)
        if line_1 > line_0:
            data = self._stream_bytes(int(self._line_starts[line_0]), int(self._line_starts[line_1]))
            head = struct.pack("<ii", line_1 - line_0, self._stream_width).ljust(_BCF_STREAM_HEADER, b"\0")
            buffer = head + data + bytes(_BCF_PAD)
            shape = (ceil((line_1 - line_0) / self.downsample), *self.shape[1:])
            decoded = unbcf_fast.parse_to_numpy(_OneBlock(buffer), shape, np.uint32, downsample=self.downsample)
            band[: shape[0]] = decoded
        if self.dtype != band.dtype:
            band = np.minimum(band, np.iinfo(self.dtype).max).astype(self.dtype)  # shows as saturated
        return band

    def _stream_bytes(self, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the (uncompressed) pixel stream."""
        if not self.compressed:
            return self._file_item().read_piece(start, stop - start)
        offsets, sizes, starts = self._blocks
        first = int(np.searchsorted(starts, start, side="right")) - 1
        last = int(np.searchsorted(starts, stop, side="left"))
        item = self._file_item()
        data = b"".join(zlib.decompress(item.read_piece(int(offsets[i]), int(sizes[i]))) for i in range(first, last))
        base = int(starts[first])
        return data[start - base:stop - base]

    def _file_item(self):
        if self._item is None:  # after unpickling (a distributed worker)
            from rsciio.bruker._api import SFS_reader

            self._item = SFS_reader(str(self.path)).get_file(f"EDSDatabase/SpectrumData{self.index}")
        return self._item

    def _pieces(self):
        """The uncompressed stream, piece by piece (noting where each compressed block starts)."""
        item = self._file_item()
        if not self.compressed:
            step = _BCF_SCAN_PIECE
            for start in range(0, item.size, step):
                yield item.read_piece(start, min(step, item.size - start))
            return
        offsets, sizes, starts = [], [], []
        offset, position = 0x80, 0
        for _ in range(item.no_of_compr_blk):
            head = item.read_piece(offset, 16)
            if len(head) < 16:
                break
            size = struct.unpack("<I", head[:4])[0]
            raw = item.read_piece(offset + 16, size)
            try:
                piece = zlib.decompress(raw)
            except zlib.error as error:
                raise InputError(f"{self.path.name} is corrupt: a block of its spectrum data does not decompress "
                                 f"({error})") from None
            offsets.append(offset + 16)
            sizes.append(size)
            starts.append(position)
            self._blocks = (np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), np.asarray(starts, np.int64))
            position += len(piece)
            offset += 16 + size
            yield piece

    def _scan(self):
        """Byte offset of every line (checking each pixel header, so decoding stays in bounds)."""
        name = self.path.name
        lines = min(self._stream_height, self.shape[0] * self.downsample)
        width_out, downsample = self.shape[1], self.downsample
        pieces = self._pieces()
        buffer, base = bytearray(), 0
        position = _BCF_STREAM_HEADER
        starts = np.empty(lines + 1, dtype=np.int64)
        unpack = _BCF_PIXEL.unpack_from
        line = 0

        def fill(end):
            while base + len(buffer) < end:
                piece = next(pieces, None)
                if piece is None:
                    raise InputError(f"{name} is truncated: its spectrum data stop before line {line + 1} of {lines}")
                buffer.extend(piece)

        for line in range(lines):
            starts[line] = position
            if position - base > _BCF_SCAN_KEEP:  # drop what was read (the line may start past the buffered bytes)
                done = min(position - base, len(buffer))
                del buffer[:done]
                base += done
            fill(position + 4)
            (n_pixels,) = struct.unpack_from("<i", buffer, position - base)
            position += 4
            if not 0 <= n_pixels <= max(self._stream_width, width_out * downsample):
                raise InputError(f"{name} is corrupt: line {line + 1} claims {n_pixels} pixels")
            for _ in range(n_pixels):
                if position + 22 > base + len(buffer):
                    fill(position + 22)
                x, _, _, _, flag, _, pulses, size = unpack(buffer, position - base)
                short = (flag == 0 and 2 * pulses > size) or (flag == 1 and (3 * pulses + 1) // 2 > size) or (
                    flag > 1 and size < 4)
                if x // downsample >= width_out or short:
                    raise InputError(f"{name} is corrupt: a pixel header of line {line + 1} is invalid")
                position += 22 + size + (2 * pulses if flag > 1 else 0)  # flag > 1: extra pulses follow
        starts[lines] = position
        fill(position)
        self._line_starts = starts


class _OneBlock:
    """What ``unbcf_fast.parse_to_numpy`` reads: the whole stream as a single block."""

    def __init__(self, data: bytes):
        self.data = data

    def get_iter_and_properties(self):
        return iter([self.data]), len(self.data), 1


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
    if "bruker" in labeled.attrs:
        metadata["bruker"] = dict(labeled.attrs["bruker"])
        if "beam_kV" in labeled.attrs["bruker"]:
            metadata["tube_kv"] = labeled.attrs["bruker"]["beam_kV"]
    return (data, {"name": labeled.name, "metadata": metadata, "axis_labels": ("energy", "y", "x")}, "image")
