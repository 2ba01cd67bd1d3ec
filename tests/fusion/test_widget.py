"""The "2P / LFM fusion" dock widget: steps, editable labels, trace plot <-> neurons, export, bad input."""

import numpy as np
import pytest

from napari_mbdl._widgets.fusion import ACTIVITY, LABELS_2P, LABELS_LFM, STEPS, FusionWidget


def _widget(viewer, qtbot):
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    return widget


def _add_pair(viewer, sample):
    viewer.add_image(sample.two_photon, name="2P", scale=sample.two_photon_voxel_um)
    viewer.add_image(sample.light_fields, name="LF")


def test_widget_steps_edit_labels_traces_and_export(make_napari_viewer_proxy, qtbot, lfm_pair, tmp_path):
    sample, _ = lfm_pair
    viewer = make_napari_viewer_proxy()
    _add_pair(viewer, sample)
    widget = _widget(viewer, qtbot)
    widget.two_photon.value = viewer.layers["2P"]
    widget.light_fields.value = viewer.layers["LF"]
    lf_before = viewer.layers["LF"].data.copy()

    widget.step.value = STEPS[0]
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    assert "fusion: 2P registered" in viewer.layers and "fusion: mean LFM volume" in viewer.layers
    assert abs(widget.registration.rotation_deg - sample.rotation_deg) < 1.5
    assert widget.step.value == STEPS[1]

    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    labels_layer = viewer.layers[LABELS_2P]
    n_found = int(labels_layer.data.max())
    assert n_found >= 0.9 * sample.n_neurons
    assert widget.step.value == STEPS[2]
    assert widget.labels.value.name == LABELS_2P

    labels_layer.data = np.where(labels_layer.data == 1, 0, labels_layer.data)  # the user erases one cell
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    assert ACTIVITY in viewer.layers and LABELS_LFM in viewer.layers
    assert viewer.layers[ACTIVITY].data.shape == (60, *sample.volume_shape)
    assert 1 not in widget.activity.label_ids and len(widget.activity.label_ids) == n_found - 1
    assert len(widget.trace_plot.lines) == n_found - 1
    np.testing.assert_array_equal(viewer.layers["LF"].data, lf_before)

    # Trace -> neuron and neuron -> trace.
    label = int(widget.activity.label_ids[2])

    class Pick:
        artist = widget.trace_plot.lines[label]

    widget.trace_plot._picked(Pick())
    assert labels_layer.selected_label == label and labels_layer.show_selected_label
    assert widget.trace_plot.highlighted == label
    other = int(widget.activity.label_ids[0])
    where = np.argwhere(labels_layer.data == other)[0] * np.asarray(labels_layer.scale)

    class Click:
        position = tuple(where)

    widget._clicked(labels_layer, Click())
    assert widget.trace_plot.highlighted == other
    assert widget.trace_plot.lines[other].get_linewidth() == 2.0

    widget.export_folder.value = str(tmp_path / "export")
    paths = widget.export()
    table = np.loadtxt(paths["csv"], delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1:].T, widget.activity.traces, rtol=1e-4)
    assert paths["zarr"].exists()
    widget.export()  # second export into the same folder is refused, not overwritten
    assert "already exists" in widget.last_error


def test_widget_reports_bad_input(make_napari_viewer_proxy, qtbot, small_pair):
    sample, _ = small_pair
    viewer = make_napari_viewer_proxy()
    widget = _widget(viewer, qtbot)
    widget.run(sync=True)
    assert "choose a 2P stack layer" in widget.last_error

    viewer.add_image(sample.two_photon[0], name="flat 2P")
    viewer.add_image(sample.light_fields, name="LF")
    widget.two_photon.value = viewer.layers["flat 2P"]
    widget.light_fields.value = viewer.layers["LF"]
    widget.run(sync=True)
    assert "must be 3D" in widget.last_error

    viewer.add_image(sample.two_photon, name="2P")  # scale 1 and no voxel size given
    widget.two_photon.value = viewer.layers["2P"]
    widget.run(sync=True)
    assert "voxel size" in widget.last_error

    widget.voxel_2p.value = "3,1,1"
    widget.step.value = STEPS[2]
    widget.run(sync=True)
    assert "register" in widget.last_error

    widget.export()
    assert "no traces" in widget.last_error
    assert len(viewer.layers) == 3


@pytest.mark.slow
def test_end_to_end_from_sample_data(make_napari_viewer_proxy, qtbot):
    """napari sample data -> the three steps -> labels, activity, traces."""
    from napari.layers import Layer

    from napari_mbdl.fusion.sample import napari_sample

    viewer = make_napari_viewer_proxy()
    for data, meta, kind in napari_sample():
        viewer.add_layer(Layer.create(data, meta, kind))
    widget = _widget(viewer, qtbot)
    widget.two_photon.value = viewer.layers["2P stack (sample)"]
    widget.light_fields.value = viewer.layers["LF series (sample)"]
    for step in STEPS:
        widget.step.value = step
        widget.run(sync=True)
        assert widget.last_error is None, widget.last_error
    assert int(viewer.layers[LABELS_2P].data.max()) == 20
    assert widget.activity.traces.shape == (20, 200)
    assert len(widget.trace_plot.lines) == 20
