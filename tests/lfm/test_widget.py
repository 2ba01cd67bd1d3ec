import numpy as np
import pytest


@pytest.fixture
def viewer_and_widget(make_napari_viewer_proxy, qtbot, default_psf, tmp_path, monkeypatch):
    from napari_mbdl._widgets.lfm import LFMWidget

    monkeypatch.chdir(tmp_path)  # whatever a widget might write relative to the working folder lands here
    viewer = make_napari_viewer_proxy()
    widget = LFMWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, widget


def _add(viewer, layer_data):
    from napari.layers import Layer

    for data, meta, kind in layer_data:
        viewer.add_layer(Layer.create(data, meta, kind))


def test_sample_time_series_to_4d_volume_end_to_end(viewer_and_widget, tmp_path):
    from napari_mbdl.lfm.sample_data import time_series_sample

    viewer, widget = viewer_and_widget
    _add(viewer, time_series_sample(n_frames=3))
    lf_layer = viewer.layers["light-field series (simulated)"]
    before = np.array(lf_layer.data, copy=True)
    widget.light_field.value = lf_layer
    widget.method.value = "unfolded"
    widget.output.value = str(tmp_path / "vol.zarr")
    result = widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    data, meta, kind = result[0]
    assert kind == "image" and data.shape == (3, 9, 75, 75)
    assert meta["scale"][1:] == pytest.approx((7.5, 1.5, 1.5))
    out = viewer.layers[-1]
    assert out.ndim == 4 and viewer.dims.ndisplay == 3
    truth = viewer.layers["true volumes"].data
    psnr = 10 * np.log10(truth.max() ** 2 / np.mean((np.asarray(out.data) - truth) ** 2))
    assert psnr > 28
    np.testing.assert_array_equal(lf_layer.data, before)
    assert (tmp_path / "vol.zarr").exists()


def test_calibrate_then_reconstruct_raw_frame_in_memory(viewer_and_widget, tmp_path):
    from napari_mbdl.lfm.sample_data import RAW_PITCH_PX, RAW_ROTATION_DEG, raw_sample

    viewer, widget = viewer_and_widget
    _add(viewer, raw_sample())
    widget.white.value = viewer.layers["white image (camera)"]
    grid = widget.calibrate()
    assert grid is not None
    assert grid.pitch_px == pytest.approx(RAW_PITCH_PX, abs=0.02)
    assert grid.rotation_deg == pytest.approx(RAW_ROTATION_DEG, abs=0.05)
    assert "lenslet grid" in viewer.layers and len(viewer.layers["lenslet grid"].data) > 150
    widget.light_field.value = viewer.layers["raw light field (camera)"]
    widget.method.value = "rl"
    widget.iterations.value = 3
    result = widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    assert result[0][0].ndim == 3 and result[0][0].shape[0] == 9
    assert list(tmp_path.iterdir()) == []  # no output path: nothing written anywhere


def test_bad_input_shows_message(viewer_and_widget, tmp_path):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((100, 101), np.float32), name="odd")
    widget.light_field.value = viewer.layers["odd"]
    widget.method.value = "rl"
    assert widget.run(sync=True) is None
    assert "does not fit" in widget.last_error
    widget.output.value = "."
    widget.run(sync=True)
    assert "must end in .zarr" in widget.last_error
    widget.output.value = ""
    widget.rectify.value = True
    widget.run(sync=True)
    assert "calibrate the lenslet grid first" in widget.last_error
    widget.rectify.value = False
    widget.psf_source.value = "PSF file"
    widget.run(sync=True)
    assert "choose a PSF file" in widget.last_error
    widget.psf_source.value = "optics below"
    widget.na.value = 1.5
    widget.run(sync=True)
    assert "NA" in widget.last_error
    widget.na.value = 0.5
    viewer.layers["odd"].metadata["lfm_optics"] = {"magnification": 40.0}
    widget.run(sync=True)
    assert "records other optics" in widget.last_error
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_reported_not_replaced(viewer_and_widget, tmp_path):
    from napari_mbdl.lfm.sample_data import time_series_sample

    viewer, widget = viewer_and_widget
    _add(viewer, time_series_sample(n_frames=2))
    widget.light_field.value = viewer.layers["light-field series (simulated)"]
    widget.method.value = "rl"
    widget.iterations.value = 1
    widget.output.value = str(tmp_path / "vol.zarr")
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    before = sorted(p.name for p in (tmp_path / "vol.zarr").rglob("*"))
    n_layers = len(viewer.layers)
    widget.run(sync=True)
    assert "already exists" in widget.last_error
    assert len(viewer.layers) == n_layers
    assert sorted(p.name for p in (tmp_path / "vol.zarr").rglob("*")) == before


def test_cancel_in_a_thread_adds_nothing(viewer_and_widget, cancel_after_first_progress):
    from napari_mbdl.lfm.sample_data import time_series_sample

    viewer, widget = viewer_and_widget
    _add(viewer, time_series_sample(n_frames=8))
    n_layers = len(viewer.layers)
    widget.light_field.value = viewer.layers["light-field series (simulated)"]
    widget.method.value = "rl"
    widget.iterations.value = 30
    cancel_after_first_progress(widget)
    assert widget.last_error is None and widget.run_button.isEnabled()
    assert len(viewer.layers) == n_layers
