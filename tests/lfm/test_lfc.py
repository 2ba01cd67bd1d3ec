"""Import of napari-LF / LFAnalyze calibration files (.lfc, HDF5)."""

import datetime

import h5py
import numpy as np
import pytest

from napari_mbdl.errors import InputError
from napari_mbdl.lfm.api import as_optics
from napari_mbdl.lfm.lfc import optics_from_lfc, read_lfc


def write_lfc(path, optics_overrides=None, drop=(), nu=15, geometry=True, rayspread=True):
    """A small .lfc laid out as napari-LF writes it.

    Mirrors ``LightFieldCalibration.save`` in napari-LF ``src/napari_lf/lfa/lflib/calibration/__init__.py``
    (PolarizedLightFieldMicroscopy/napari-LF): root attrs ``timestamp``/``comments``; group ``optics`` with its 12
    attributes (values as ``lfcalibrate.py`` passes them: lengths in um, tube lens in mm, wavelength in nm,
    magnification an int); group ``geometry`` (attrs + warp-coefficient datasets, isometry = 3x3);
    group ``radiometry`` (datasets + ``has_dark_frame``); groups ``rayspread`` (z attrs + a gzip uint8 dataset
    standing in for the pickled database) and ``psf``.
    """
    optics = {
        "ulens_focal_length": 2400.0, "ulens_focal_distance": 2400.0, "ulens_pitch": 150.0, "pixel_size": 10.0,
        "objective_magnification": 20, "objective_na": 0.5, "medium_index": 1.33, "tubelens_focal_length": 200.0,
        "ulens_fill_factor": 1.0, "pixel_fill_factor": 1.0, "center_wavelength": 509.0, "ulens_profile": "rect",
    }
    optics.update(optics_overrides or {})
    with h5py.File(path, "w") as f:
        f.attrs["timestamp"] = str(datetime.datetime(2024, 1, 2, 3, 4, 5))
        f.attrs["comments"] = ""
        group = f.create_group("optics")
        for key, value in optics.items():
            if key not in drop:
                group.attrs[key] = value
        if geometry:
            g = f.create_group("geometry")
            g.attrs["calibration_image_filename"] = "white.tif"
            g.attrs["skip_alignment"] = False
            g.attrs["alignment_method"] = 1
            g.attrs["nu"] = nu
            g.attrs["nv"] = nu
            g.attrs["ns"] = 12
            g.attrs["nt"] = 10
            for name in ("forwardCoefficients", "reverseCoefficients", "radiometryForwardCoefficients",
                         "radiometryReverseCoefficients"):
                g.create_dataset(name, data=np.identity(3, dtype=np.float32))
            r = f.create_group("radiometry")
            r.create_dataset("radiometry", data=np.ones((nu, nu), np.float32))
            r.create_dataset("radiometric_correction", data=np.ones((10 * nu, 12 * nu), np.float32))
            r.create_dataset("rectified_radiometry", data=np.ones((10 * nu, 12 * nu), np.float32))
            r.attrs["has_dark_frame"] = False
        if rayspread:
            rs = f.create_group("rayspread")
            f.create_group("psf")
            rs.attrs["num_z_slices"] = 5
            rs.attrs["um_per_z_slice"] = 4.0
            rs.attrs["z_center"] = 2.0
            rs.create_dataset("rayspread_db", data=np.zeros(16, np.uint8), compression="gzip")
    return path


def test_lfc_maps_optics(tmp_path):
    path = write_lfc(tmp_path / "cal.lfc")
    o = optics_from_lfc(path)
    assert o.magnification == 20 and o.na == 0.5 and o.n == pytest.approx(1.33)
    assert o.wavelength_um == pytest.approx(0.509)
    assert o.lenslet_pitch_um == 150 and o.mla_focal_um == 2400
    assert o.pixels_per_lenslet == 15 and o.pixel_size_um == pytest.approx(10.0)
    assert o.depths_um == (-6.0, -2.0, 2.0, 6.0, 10.0)  # z_center +- (i - 2) * 4, as lflib's z_coords
    assert o.voxels_per_lenslet == 5 and o.psf_lenslets == 7
    assert as_optics(str(path)) == o
    content = read_lfc(path)
    assert content["geometry"]["nu"] == 15 and content["geometry"]["ns"] == 12
    assert content["file"]["timestamp"].startswith("2024")


def test_lfc_pixels_per_lenslet_and_depth_fallbacks(tmp_path):
    # lflib rectifies onto nu = ceil(pitch / pixel_size) pixels; an even nu falls back to the nearest odd number
    o = optics_from_lfc(write_lfc(tmp_path / "even.lfc", {"pixel_size": 6.5}, nu=24))
    assert o.pixels_per_lenslet == 23 and o.pixel_size_um == pytest.approx(150 / 23)
    path = write_lfc(tmp_path / "bare.lfc", geometry=False, rayspread=False, drop=("ulens_focal_distance",))
    with pytest.raises(InputError, match="rayspread"):
        optics_from_lfc(path)
    o = optics_from_lfc(path, depths_um="-10:10:10")
    assert o.depths_um == (-10.0, 0.0, 10.0) and o.pixels_per_lenslet == 15


def test_lfc_missing_attribute_is_named(tmp_path):
    path = write_lfc(tmp_path / "cal.lfc", drop=("objective_na",))
    with pytest.raises(InputError, match="/optics/objective_na is missing") as info:
        optics_from_lfc(path)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="objective_na"):
        as_optics(path)


def test_lfc_unmodelled_designs_are_refused(tmp_path):
    with pytest.raises(InputError, match="ulens_focal_distance"):
        optics_from_lfc(write_lfc(tmp_path / "a.lfc", {"ulens_focal_distance": 2000.0}))
    with pytest.raises(InputError, match="rect"):
        optics_from_lfc(write_lfc(tmp_path / "b.lfc", {"ulens_profile": "circ"}))


def test_lfc_not_hdf5_or_missing(tmp_path):
    path = tmp_path / "fake.lfc"
    path.write_text("optics: not hdf5\n")
    with pytest.raises(InputError, match="not HDF5"):
        optics_from_lfc(path)
    with pytest.raises(InputError, match="not HDF5"):
        as_optics(path)
    with pytest.raises(InputError, match="not found"):
        optics_from_lfc(tmp_path / "none.lfc")
    other = tmp_path / "other.lfc"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(InputError, match="no /optics group"):
        optics_from_lfc(other)


def test_cli_psf_from_lfc(tmp_path):
    from napari_mbdl.cli import main
    from napari_mbdl.lfm.optics import LFPsf

    path = write_lfc(tmp_path / "cal.lfc", {"ulens_pitch": 70.0}, nu=7)
    assert main(["lfm-psf", "--optics", str(path), "--depths=-5:5:5", str(tmp_path / "p.zarr"), "-q"]) == 0
    psf = LFPsf.load(tmp_path / "p.zarr")
    assert psf.optics.pixels_per_lenslet == 7 and psf.optics.depths_um == (-5.0, 0.0, 5.0)
    assert main(["lfm-psf", "--optics", str(tmp_path / "none.lfc"), str(tmp_path / "q.zarr"), "-q"]) == 2
