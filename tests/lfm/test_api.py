import numpy as np
import pytest

from napari_mbdl.engine import InputError, run_steps
from napari_mbdl.lfm.api import check_output_path, lfm_psf, lfm_reconstruct, lfm_reconstruct_steps
from napari_mbdl.lfm.simulate import simulate_sample


@pytest.fixture(scope="module")
def series(small_psf):
    return simulate_sample(small_psf, n_lenslets=(5, 6), n_cells=4, n_frames=5, seed=4)


def test_time_series_streams_to_zarr_and_matches_memory(series, small_psf, tmp_path):
    lf = series.light_field.copy()
    in_memory = lfm_reconstruct(lf, small_psf, method="rl", n_iter=5, device="cpu")
    assert in_memory.shape == (5, 3, 15, 18)
    np.testing.assert_array_equal(lf, series.light_field)  # input untouched
    result = run_steps(lfm_reconstruct_steps(lf, small_psf, method="rl", n_iter=5, out=tmp_path / "v.zarr",
                                             frames_per_chunk=2, device="cpu"))
    np.testing.assert_allclose(np.asarray(result.array), in_memory, rtol=1e-4, atol=1e-4)
    assert result.axes == "tzyx" and result.chunks == (2,)
    assert result.scale[1:] == pytest.approx(small_psf.optics.voxel_size_um)
    single = lfm_reconstruct(lf[2], small_psf, method="isra", n_iter=5, device="cpu")
    assert single.shape == (3, 15, 18)
    np.testing.assert_allclose(single, lfm_reconstruct(lf[2:3], small_psf, method="isra", n_iter=5)[0], rtol=1e-5)


def test_reconstruct_from_zarr_path_and_psf_file(series, small_psf, tmp_path):
    from napari_mbdl.io.writing import write_array

    write_array(series.light_field, tmp_path / "lf.zarr", axes="tyx")
    psf_path = small_psf.save(tmp_path / "psf.zarr")
    a = lfm_reconstruct(str(tmp_path / "lf.zarr"), str(psf_path), method="rl", n_iter=3)
    b = lfm_reconstruct(series.light_field, small_psf, method="rl", n_iter=3)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_output_must_be_a_zarr_or_tiff_never_a_folder(series, small_psf, tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file.txt").write_text("precious")
    for bad in (tmp_path / "keep", ".", str(tmp_path)):
        with pytest.raises(InputError, match="must end in .zarr"):
            lfm_reconstruct(series.light_field, small_psf, method="rl", n_iter=1, out=bad, overwrite=True)
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "file.txt").write_text("precious")
    with pytest.raises(InputError, match="not a zarr store"):
        lfm_reconstruct(series.light_field, small_psf, method="rl", n_iter=1, out=tmp_path / "plain.zarr",
                        overwrite=True)
    assert (tmp_path / "keep" / "file.txt").read_text() == "precious"
    assert (tmp_path / "plain.zarr" / "file.txt").read_text() == "precious"
    assert check_output_path("") is None and check_output_path(None) is None


def test_bad_inputs(series, small_psf, small_optics, tmp_path):
    lf = series.light_field
    with pytest.raises(InputError, match="does not fit"):
        lfm_reconstruct(lf[:, :-3, :], small_psf, method="rl")
    bad = lf.copy()
    bad[3, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lfm_reconstruct(bad, small_psf, method="rl", frames_per_chunk=1)
    with pytest.raises(InputError, match="no PSF"):
        lfm_reconstruct(lf, None)
    with pytest.raises(InputError, match="unknown method"):
        lfm_reconstruct(lf, small_psf, method="admm")
    with pytest.raises(InputError, match="trained for different optics"):
        lfm_reconstruct(lf, small_psf, method="unfolded")
    with pytest.raises(InputError, match="\\(H, W\\)"):
        lfm_reconstruct(np.zeros((2, 2, 14, 14)), small_psf, method="rl")
    from napari_mbdl.io.writing import write_array
    from napari_mbdl.lfm.optics import LFOptics

    other = LFOptics(**{**small_optics.to_dict(), "na": 0.45})
    write_array(lf, tmp_path / "lf.zarr", axes="tyx", attrs={"lfm_optics": other.to_dict()})
    with pytest.raises(InputError, match="optics differ"):
        lfm_reconstruct(str(tmp_path / "lf.zarr"), small_psf, method="rl")


def test_raw_frames_are_rectified_with_the_grid(small_psf):
    from napari_mbdl.lfm.calibration import LensletGrid
    from napari_mbdl.lfm.sample_data import to_raw_camera

    sample = simulate_sample(small_psf, n_lenslets=(7, 7), n_cells=5, seed=8)
    shape = (7 * 8 + 2, 7 * 8 + 3)
    grid = LensletGrid(((shape[0] - 1) / 2, (shape[1] - 1) / 2), 8.0, 0.0, shape)
    raw = to_raw_camera(sample.light_field, 7, grid)
    vol = lfm_reconstruct(raw, small_psf, method="rl", n_iter=3, grid=grid)
    assert vol.shape == (3, 21, 21)
    ref = lfm_reconstruct(sample.light_field, small_psf, method="rl", n_iter=3)
    assert np.corrcoef(vol.ravel(), ref.ravel())[0, 1] > 0.9
    with pytest.raises(InputError, match="calibration was made on"):
        lfm_reconstruct(raw[:-1], small_psf, method="rl", grid=grid)


def test_lfm_psf_writes_and_refuses_overwrite(small_optics, tmp_path):
    from napari_mbdl.engine import OutputExistsError

    psf = lfm_psf(small_optics, out=tmp_path / "p.zarr")
    assert (tmp_path / "p.zarr").exists() and psf.psf.shape[0] == 3
    with pytest.raises(OutputExistsError):
        lfm_psf(small_optics, out=tmp_path / "p.zarr")
    with pytest.raises(InputError, match="must end in .zarr"):
        lfm_psf(small_optics, out=tmp_path)


def test_importing_lfm_does_not_import_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, napari_mbdl.lfm; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
