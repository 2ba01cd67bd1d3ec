"""The "XRF elemental maps" dock widget: detection, element choice, maps, region and cursor spectra, bad input."""

import numpy as np

from napari_mbdl._widgets.xrf import XRFWidget
from napari_mbdl.xrf.layers import sample_cube


def _viewer_with_cube(make_napari_viewer_proxy, qtbot):
    from napari.layers import Layer

    viewer = make_napari_viewer_proxy()
    data, meta, kind = sample_cube((24, 24), 1024, seed=3)[0]
    viewer.add_layer(Layer.create(data, meta, kind))
    widget = XRFWidget(viewer)
    qtbot.addWidget(widget)
    widget.cube.value = viewer.layers[meta["name"]]
    return viewer, widget


def test_sample_to_element_layers_end_to_end(make_napari_viewer_proxy, qtbot):
    viewer, widget = _viewer_with_cube(make_napari_viewer_proxy, qtbot)
    cube = viewer.layers[0]
    before = np.asarray(cube.data).copy()
    assert widget.gain.value > 0                                  # calibration read from the layer metadata
    widget.detect(sync=True)
    assert widget.last_error is None, widget.last_error
    assert {"Fe", "Cu", "Pb", "Hg"} <= set(widget.elements.choices)
    assert widget.plot.labels                                     # detected lines are labelled on the plot
    widget.elements.value = ["Fe", "Cu", "Pb"]                    # the user deselects the rest
    widget.add_elements.value = "Zn"
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    names = {layer.name for layer in viewer.layers}
    assert {"Fe quantity", "Fe confidence", "Zn quantity", "Pb confidence"} <= names
    assert "Hg quantity" not in names
    assert viewer.layers["Fe quantity"].data.shape == (24, 24)
    assert viewer.layers["Fe quantity"].metadata["element"] == "Fe"
    assert np.array_equal(np.asarray(cube.data), before)


def test_region_and_cursor_spectra(make_napari_viewer_proxy, qtbot):
    viewer, widget = _viewer_with_cube(make_napari_viewer_proxy, qtbot)
    shapes = viewer.add_shapes([np.array([[0, 2, 2], [0, 2, 10], [0, 10, 10], [0, 10, 2]])], shape_type="polygon",
                               name="region")
    widget.region.value = shapes
    spectrum = widget.region_spectrum()
    assert spectrum is not None and spectrum.shape == (1024,)
    cube = np.asarray(viewer.layers[0].data)
    inside = cube[:, 2:11, 2:11].sum(axis=(1, 2))
    assert 0.5 * inside.sum() < spectrum.sum() <= inside.sum()     # polygon rasterised inside its box
    pixel = widget.show_pixel_spectrum(5, 7)
    assert np.array_equal(pixel, cube[:, 5, 7])
    assert "pixel" in widget.plot.overlays


def test_missing_calibration_and_layer_are_reported(make_napari_viewer_proxy, qtbot):
    viewer, widget = _viewer_with_cube(make_napari_viewer_proxy, qtbot)
    widget.gain.value = 0.0
    widget.run(sync=True)
    assert "no energy calibration" in (widget.last_error or "")
    widget.gain.value = 39.0625
    widget.line_1.value = "nonsense"
    assert widget.calibrate() is None
    assert "channel:line" in widget.last_error
    viewer.layers.clear()
    widget.run(sync=True)
    assert "choose a cube" in (widget.last_error or "")
