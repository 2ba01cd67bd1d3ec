import numpy as np
import pytest

from napari_mbdl.engine import InputError, run_steps
from napari_mbdl.xrf.api import xrf_maps, xrf_maps_steps
from napari_mbdl.xrf.simulate import ELEMENTS


def _pearson(a, b):
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


@pytest.mark.parametrize("method", ["fri", "linear"])
def test_maps_correlate_with_the_truth(scan, detection, method):
    original = scan.cube.copy()
    result = run_steps(xrf_maps_steps(scan.cube, (0.0, scan.calibration.gain), method=method,
                                      identification=detection, tube_kv=50))
    assert np.array_equal(scan.cube, original)                  # the input is never modified
    assert set(result.maps) == set(ELEMENTS)
    for element in ("Fe", "Cu", "Zn", "Hg", "Pb", "Co"):
        quantity, confidence = result.maps[element]
        assert quantity.shape == (24, 24) and confidence.shape == (24, 24)
        assert np.all(quantity >= 0)
        assert _pearson(quantity, scan.true_maps[element]) > 0.9, element
    # confidence is high where the element is, low where it is absent
    quantity, confidence = result.maps["Cu"]
    rich = scan.true_maps["Cu"] > np.percentile(scan.true_maps["Cu"], 90)
    poor = scan.true_maps["Cu"] <= 0.01 * scan.true_maps["Cu"].max()
    assert rich.any() and poor.any()
    assert np.median(confidence[rich]) > 5 > np.median(confidence[poor])


def test_streamed_zarr_output_equals_the_in_memory_result(scan, detection, tmp_path):
    from napari_mbdl.io.arrays import open_array
    from napari_mbdl.xrf.io import write_cube_zarr

    cube_path = tmp_path / "cube.zarr"
    write_cube_zarr(scan.cube, cube_path, scan.calibration, chunk=8)
    memory = run_steps(xrf_maps_steps(scan.cube, scan.calibration, identification=detection))
    streamed = run_steps(xrf_maps_steps(str(cube_path), identification=detection, out=tmp_path / "maps.zarr",
                                        superpixel=8, memory_budget="4MB"))
    written = open_array(tmp_path / "maps.zarr")
    assert written.axes == "cyx" and written.shape == (2 * len(ELEMENTS), 24, 24)
    assert written.attrs["xrf"]["channels"][0].endswith("quantity")
    for element in ELEMENTS:
        assert np.allclose(np.asarray(streamed.maps[element][0]), memory.maps[element][0], rtol=1e-4, atol=1e-3)


def test_energy_first_cube_and_public_api(scan):
    import napari_mbdl

    cube = np.moveaxis(scan.cube, -1, 0)                        # (energy, y, x)
    maps = napari_mbdl.xrf_maps(cube, energy=scan.calibration, elements=["Fe", "Cu"], energy_axis=0, method="linear")
    assert set(maps) == {"Fe", "Cu"}
    assert _pearson(maps["Fe"][0], scan.true_maps["Fe"]) > 0.9


def test_bad_input_gets_clear_messages(scan):
    calibration = (0.0, scan.calibration.gain)
    with pytest.raises(InputError, match="three axes"):
        xrf_maps(scan.cube[0], energy=calibration)
    with pytest.raises(InputError, match="no energy calibration"):
        xrf_maps(scan.cube)
    with pytest.raises(InputError, match="negative"):
        xrf_maps(scan.cube.astype(np.float32) - 5, energy=calibration)
    with pytest.raises(InputError, match="no counts"):
        xrf_maps(np.zeros((4, 4, 256), np.uint16), energy=calibration)
    bad = scan.cube[:4, :4].astype(np.float32)
    bad[0, 0, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        xrf_maps(bad, energy=calibration)
    with pytest.raises(InputError, match="energy range"):
        xrf_maps(scan.cube[:, :, :64], energy=calibration, elements=["Sn"])
    with pytest.raises(InputError, match="method"):
        xrf_maps(scan.cube, energy=calibration, method="magic")
    with pytest.raises(InputError, match="element symbol"):
        xrf_maps(scan.cube, energy=calibration, elements=["Xx"])


def test_saturated_pixels_are_reported(scan, detection):
    cube = np.clip(scan.cube, 0, 255).astype(np.uint8)
    cube[0, 0, 300] = 255
    result = run_steps(xrf_maps_steps(cube, scan.calibration, identification=detection))
    assert any("largest value" in w for w in result.warnings)
