"""The "X-ray separation" dock widget: sample data -> separated layers, previews, cancel, bad input."""

import numpy as np
import pytest

from napari_mbdl._widgets.xray import PREVIEW_NAMES, XraySeparationWidget
from napari_mbdl.xray_separation.sample_data import panel_layers


def _viewer_with_panel(make_napari_viewer_proxy, size=64):
    from napari.layers import Layer

    viewer = make_napari_viewer_proxy()
    for data, meta, kind in panel_layers(size):
        viewer.add_layer(Layer.create(data, meta, kind))
    return viewer


def _widget(viewer, qtbot, iterations=6):
    widget = XraySeparationWidget(viewer)
    qtbot.addWidget(widget)
    widget.iterations.value = iterations
    widget.preview_every.value = 3
    widget.device.value = "cpu"
    return widget


def test_sample_data_to_separated_layers(make_napari_viewer_proxy, qtbot):
    viewer = _viewer_with_panel(make_napari_viewer_proxy)
    widget = _widget(viewer, qtbot)
    assert widget.mixed.value.name == "xray: mixed X-ray"
    assert widget.rgb1.value.name == "xray: photograph side 1"
    mixed_before = viewer.layers["xray: mixed X-ray"].data.copy()
    previews = []
    original = widget.on_preview
    widget.on_preview = lambda p: (previews.append(p), original(p))
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    assert len(previews) == 3  # start, iteration 3, iteration 6
    for name in ("xray: separated side 1", "xray: separated side 2", "xray: re-synthesis error"):
        assert viewer.layers[name].data.shape == (64, 64)
    for name in PREVIEW_NAMES:
        assert name not in viewer.layers  # previews are replaced by the results
    total = viewer.layers["xray: separated side 1"].data + viewer.layers["xray: separated side 2"].data
    assert np.abs(total - mixed_before).mean() < 0.05
    np.testing.assert_array_equal(viewer.layers["xray: mixed X-ray"].data, mixed_before)
    # the layers say how long it trained and which network is kept
    note = viewer.layers["xray: separated side 1"].metadata["xray_separation"]
    assert note == widget.last_separation.trained.summary() and note.startswith("trained 6 iterations")


def test_two_sided_with_second_photograph(make_napari_viewer_proxy, qtbot):
    viewer = _viewer_with_panel(make_napari_viewer_proxy)
    widget = _widget(viewer, qtbot, iterations=2)
    widget.rgb2.value = viewer.layers["xray: photograph side 2 (mirrored)"]
    widget.exclusion.value = 0.02
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    assert widget.last_separation.trained.two_sided
    assert widget.last_separation.trained.config.weight_exclusion == pytest.approx(0.02)
    widget.exclusion.value = widget.exclusion.min
    assert widget.exclusion.native.text() == "auto"
    widget.run(sync=True)
    assert widget.last_separation.trained.config.weight_exclusion is None  # auto: 0 with two photographs


def test_cancel_during_training_keeps_the_best_network(make_napari_viewer_proxy, qtbot):
    viewer = _viewer_with_panel(make_napari_viewer_proxy)
    widget = _widget(viewer, qtbot, iterations=500)
    original = widget.on_preview

    def cancel_at_first_preview(preview):
        original(preview)
        widget.cancel()

    widget.on_preview = cancel_at_first_preview
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    trained = widget.last_separation.trained
    assert trained.stopped_early and trained.iterations_done < 500
    assert "xray: separated side 2" in viewer.layers
    assert "(stopped early)" in viewer.layers["xray: separated side 2"].metadata["xray_separation"]


def test_bad_input_is_a_notification_not_a_crash(make_napari_viewer_proxy, qtbot):
    viewer = _viewer_with_panel(make_napari_viewer_proxy)
    widget = _widget(viewer, qtbot)
    viewer.add_image(np.asarray(viewer.layers["xray: photograph side 1"].data).mean(-1), name="grey photo")
    widget.rgb1.value = viewer.layers["grey photo"]
    widget.run(sync=True)
    assert "greyscale" in widget.last_error
    widget.rgb1.value = viewer.layers["xray: photograph side 1"]
    viewer.add_image(np.random.default_rng(0).random((48, 48)).astype(np.float32), name="small")
    widget.mixed.value = viewer.layers["small"]
    widget.run(sync=True)
    assert "align" in widget.last_error
    assert "xray: separated side 1" not in viewer.layers


def test_align_button_adds_an_aligned_copy(make_napari_viewer_proxy, qtbot):
    from skimage.transform import resize

    viewer = _viewer_with_panel(make_napari_viewer_proxy)
    widget = _widget(viewer, qtbot)
    photo = viewer.layers["xray: photograph side 1"].data
    viewer.add_image(resize(photo, (96, 96, 3)), name="big photo", rgb=True)
    widget.rgb1.value = viewer.layers["big photo"]
    widget.align_photographs()
    assert widget.rgb1.value.name == "big photo (aligned)"
    assert widget.rgb1.value.data.shape == (64, 64, 3)
    assert viewer.layers["big photo"].data.shape == (96, 96, 3)
