"""Optics from a napari-LF / LFAnalyze (``lflib``) calibration file (``.lfc``).

An ``.lfc`` file is HDF5.  The layout read here is the one written by ``LightFieldCalibration.save`` in
napari-LF's ``src/napari_lf/lfa/lflib/calibration/__init__.py`` (run by ``lfcalibrate.py``):

* root attributes ``timestamp`` and ``comments``;
* group ``/optics``, attributes ``ulens_focal_length``, ``ulens_focal_distance`` (absent in old files: equal
  to the focal length), ``ulens_pitch``, ``pixel_size`` (all micrometres), ``objective_magnification``,
  ``objective_na``, ``medium_index``, ``tubelens_focal_length`` (millimetres), ``ulens_fill_factor``,
  ``pixel_fill_factor``, ``center_wavelength`` (nanometres) and ``ulens_profile`` (``'rect'`` or ``'circ'``);
* group ``/geometry`` (when the geometry was calibrated), attributes ``calibration_image_filename``,
  ``skip_alignment``, ``alignment_method`` (1 isometry, 2 affine, 3 cubic), ``nu, nv`` (rectified pixels per
  lenslet) and ``ns, nt`` (lenslets), datasets of warp coefficients;
* group ``/radiometry`` (datasets, not used here);
* groups ``/rayspread`` and ``/psf`` (when the PSF database was generated), ``/rayspread`` attributes
  ``num_z_slices``, ``um_per_z_slice`` and ``z_center`` (micrometres): the slices lie at
  ``z_center + (i - (num_z_slices - 1) / 2) * um_per_z_slice``, +z towards the objective.

Only attributes are read: the warp-coefficient datasets are not mapped to a :class:`LensletGrid` (the raw image
size is not stored and the default warp is cubic), and the pickled ``rayspread_db`` / ``psf_db`` datasets are
never unpickled.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_mbdl.errors import InputError
from napari_mbdl.lfm.optics import LFOptics, parse_depths

OPTICS_ATTRS = ("ulens_focal_length", "ulens_focal_distance", "ulens_pitch", "pixel_size", "objective_magnification",
                "objective_na", "medium_index", "tubelens_focal_length", "ulens_fill_factor", "pixel_fill_factor",
                "center_wavelength", "ulens_profile")
GEOMETRY_ATTRS = ("calibration_image_filename", "skip_alignment", "alignment_method", "nu", "nv", "ns", "nt")
RAYSPREAD_ATTRS = ("num_z_slices", "um_per_z_slice", "z_center")


def _plain(value):
    """An HDF5 attribute as a Python scalar / str (strings written by Python 2 come back as bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_lfc(path: str | Path) -> dict:
    """The attributes of a napari-LF ``.lfc`` file: ``{"file": {...}, "optics": {...}, "geometry": {...} or None,
    "rayspread": {...} or None}`` (only the attributes present are listed; datasets are not read)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"napari-LF calibration file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path.name} is not a napari-LF calibration file (.lfc): not HDF5") from None
    with handle:
        if "optics" not in handle or not isinstance(handle["optics"], h5py.Group):
            raise InputError(f"{path.name} is not a napari-LF calibration file (.lfc): no /optics group")
        out = {"file": {k: _plain(v) for k, v in handle.attrs.items()}}
        for name, keys in (("optics", OPTICS_ATTRS), ("geometry", GEOMETRY_ATTRS), ("rayspread", RAYSPREAD_ATTRS)):
            group = handle.get(name)
            if isinstance(group, h5py.Group):
                out[name] = {k: _plain(group.attrs[k]) for k in keys if k in group.attrs}
            else:
                out[name] = None
    return out


def _number(section: dict, group: str, key: str, path: Path) -> float:
    if key not in section:
        raise InputError(f"{path.name}: attribute /{group}/{key} is missing; it is needed for the optics")
    value = section[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path.name}: /{group}/{key} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{path.name}: /{group}/{key} = {value!r} is not a finite number")
    return number


def optics_from_lfc(path: str | Path, depths_um=None, voxels_per_lenslet: int = 5, psf_lenslets: int = 7,
                    pixels_per_lenslet: int | None = None) -> LFOptics:
    """``LFOptics`` from a napari-LF / LFAnalyze calibration file (``.lfc``, HDF5).

    Mapped: ``objective_magnification -> magnification``, ``objective_na -> na``, ``medium_index -> n``,
    ``center_wavelength`` (nm) ``-> wavelength_um``, ``ulens_pitch -> lenslet_pitch_um``,
    ``ulens_focal_length -> mla_focal_um``; pixels per lenslet from ``/geometry`` ``nu`` (= ``nv``) when it is
    odd, otherwise the odd integer nearest ``ulens_pitch / pixel_size``; the pixel size becomes
    ``ulens_pitch / pixels_per_lenslet`` (rectified frames); depths from ``/rayspread`` ``num_z_slices``,
    ``um_per_z_slice``, ``z_center``.

    Parameters
    ----------
    path : str or Path
        The ``.lfc`` file.
    depths_um : str or sequence of float, optional
        Depths to use instead of the file's ``/rayspread`` slices (required when the file has none).
    voxels_per_lenslet, psf_lenslets : int
        Not in the file (napari-LF's supersampling factor is only inside its pickled PSF database).
    pixels_per_lenslet : int, optional
        Overrides the rule above.

    Raises
    ------
    InputError
        Not HDF5, no ``/optics`` group, a needed attribute missing (named), or a design napari-mbdl does not model
        (camera not at the microlens focal plane, circular microlenses, non-square lenslet images).
    """
    path = Path(path)
    content = read_lfc(path)
    optics = content["optics"]
    magnification = _number(optics, "optics", "objective_magnification", path)
    na = _number(optics, "optics", "objective_na", path)
    n = _number(optics, "optics", "medium_index", path)
    wavelength_nm = _number(optics, "optics", "center_wavelength", path)
    pitch = _number(optics, "optics", "ulens_pitch", path)
    focal = _number(optics, "optics", "ulens_focal_length", path)
    pixel_size = _number(optics, "optics", "pixel_size", path)
    if not 100.0 <= wavelength_nm <= 5000.0:
        raise InputError(f"{path.name}: /optics/center_wavelength = {wavelength_nm:g} is not a wavelength in nm")
    if "ulens_focal_distance" in optics:  # old files lack it: lflib then takes the focal length
        distance = _number(optics, "optics", "ulens_focal_distance", path)
        if abs(distance - focal) > 1e-6 * abs(focal):
            raise InputError(f"{path.name}: ulens_focal_distance ({distance:g} um) differs from ulens_focal_length "
                             f"({focal:g} um); only a camera at the microlens focal plane is modelled")
    profile = str(optics.get("ulens_profile", "rect")).strip().lower()
    if profile != "rect":
        raise InputError(f"{path.name}: ulens_profile {profile!r}: only square ('rect') microlenses are modelled")
    if pixel_size <= 0 or pitch <= 0:
        raise InputError(f"{path.name}: ulens_pitch and pixel_size must be positive")

    geometry = content["geometry"] or {}
    if pixels_per_lenslet is None:
        nu = geometry.get("nu")
        nv = geometry.get("nv")
        if nu is not None and nv is not None and int(nu) != int(nv):
            raise InputError(f"{path.name}: /geometry nu = {nu} and nv = {nv} differ; square lenslet images needed")
        if nu is not None and int(nu) % 2 == 1:
            pixels_per_lenslet = int(nu)
        else:
            ratio = pitch / pixel_size
            pixels_per_lenslet = int(round(ratio))
            if pixels_per_lenslet % 2 == 0:
                pixels_per_lenslet += 1 if ratio >= pixels_per_lenslet else -1
            pixels_per_lenslet = max(pixels_per_lenslet, 1)

    if depths_um is None:
        rayspread = content["rayspread"]
        if rayspread is None:
            raise InputError(f"{path.name}: no /rayspread group (num_z_slices, um_per_z_slice, z_center); "
                             "give the depths")
        count = _number(rayspread, "rayspread", "num_z_slices", path)
        step = _number(rayspread, "rayspread", "um_per_z_slice", path)
        center = _number(rayspread, "rayspread", "z_center", path)
        if count < 1 or count != int(count) or step <= 0:
            raise InputError(f"{path.name}: /rayspread needs num_z_slices >= 1 and um_per_z_slice > 0")
        count = int(count)
        depths = tuple(np.round(center + (np.arange(count) - (count - 1) / 2) * step, 6))
    else:
        depths = parse_depths(depths_um)

    return LFOptics(
        magnification=magnification, na=na, n=n, wavelength_um=wavelength_nm / 1000.0, lenslet_pitch_um=pitch,
        mla_focal_um=focal, pixel_size_um=pitch / pixels_per_lenslet, pixels_per_lenslet=int(pixels_per_lenslet),
        voxels_per_lenslet=int(voxels_per_lenslet), depths_um=depths, psf_lenslets=int(psf_lenslets),
    )
