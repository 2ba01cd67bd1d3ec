"""Dock widget "2P / LFM fusion": registration (overlay), segmentation (editable labels), activity + traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, LineEdit, PushButton, create_widget
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_mbdl._widgets._base import JobWidget, optional_path, require_layer
from napari_mbdl.engine.errors import InputError, MBDLError
from napari_mbdl.engine.progress import Progress

STEPS = ("1. register", "2. segment", "3. activity")
LABELS_2P = "fusion: 2P labels"
LABELS_LFM = "fusion: LFM labels"
ACTIVITY = "fusion: activity"


def _triple(text: str, what: str) -> tuple[float, float, float]:
    from napari_mbdl.fusion.cli import _triple as parse

    return parse(text, what)


class TracePlot(QWidget):
    """Stacked dF/F traces (matplotlib in Qt); clicking a trace selects its neuron.

    Parameters
    ----------
    on_pick : callable, optional
        Called with the label id of a clicked trace.
    """

    def __init__(self, on_pick=None, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas)
        self.on_pick = on_pick
        self.lines: dict[int, object] = {}
        self.highlighted: int | None = None
        self.canvas.mpl_connect("pick_event", self._picked)

    def set_traces(self, traces: np.ndarray, label_ids, frame_rate_hz: float | None = None) -> None:
        """Draw one trace per neuron, stacked with a fixed offset."""
        self.axes.clear()
        self.lines = {}
        t = np.arange(traces.shape[1]) / (frame_rate_hz or 1.0)
        spread = float(np.nanpercentile(traces, 99) - np.nanpercentile(traces, 1)) if traces.size else 1.0
        step = max(spread, 1e-6)
        for row, (label, trace) in enumerate(zip(label_ids, traces)):
            (line,) = self.axes.plot(t, trace + row * step, lw=0.8, picker=5)
            line.label_id = int(label)
            self.lines[int(label)] = line
        self.axes.set_xlabel("time (s)" if frame_rate_hz else "frame")
        self.axes.set_ylabel("dF/F (stacked)")
        self.axes.set_yticks([])
        self.highlighted = None
        self.canvas.draw_idle()

    def highlight(self, label_id: int | None) -> None:
        """Thicken the trace of ``label_id`` and fade the others (None: all normal)."""
        self.highlighted = None if label_id is None or int(label_id) not in self.lines else int(label_id)
        for label, line in self.lines.items():
            chosen = self.highlighted is None or label == self.highlighted
            line.set_linewidth(2.0 if label == self.highlighted else 0.8)
            line.set_alpha(1.0 if chosen else 0.25)
        title = f"neuron {self.highlighted}" if self.highlighted is not None else ""
        self.axes.set_title(title)
        self.canvas.draw_idle()

    def _picked(self, event) -> None:
        label = getattr(event.artist, "label_id", None)
        if label is None:
            return
        self.highlight(label)
        if self.on_pick is not None:
            self.on_pick(label)


class FusionWidget(JobWidget):
    """Fuse a two-photon structural stack with a light-field series: neurons and their activity."""

    title = "2P / LFM fusion"
    run_text = "Run step"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        self.two_photon = create_widget(annotation=napari.layers.Image, label="2P stack")
        self.light_fields = create_widget(annotation=napari.layers.Image, label="light-field series")
        self.labels = create_widget(annotation=napari.layers.Labels, label="2P labels (editable)",
                                    options={"nullable": True})
        self.voxel_2p = LineEdit(label="2P voxel (um) dz,dy,dx", value="")
        self.cell_radius = LineEdit(label="cell radius (um) rz,ry,rx", value="5,4,4")
        self.psf_source = ComboBox(label="PSF", choices=["built-in sample microscope", "PSF file"],
                                   value="built-in sample microscope")
        self.psf_file = FileEdit(label="PSF file (.zarr)", mode="d", filter="*.zarr")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.step = ComboBox(label="step", choices=list(STEPS), value=STEPS[0])
        self.export_folder = FileEdit(label="export folder", mode="d")
        self.export_button = PushButton(text="Export traces (CSV + zarr)")
        self.form.extend([self.two_photon, self.light_fields, self.voxel_2p, self.cell_radius, self.psf_source,
                          self.psf_file, self.device, self.step, self.labels, self.export_folder, self.export_button])
        self.psf_source.changed.connect(self._update_visibility)
        self.export_button.changed.connect(self.export)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()
        self._update_visibility()

        self.trace_plot = TracePlot(on_pick=self.select_neuron)
        self.layout().insertWidget(self.layout().count() - 1, self.trace_plot)
        self.registration = None
        self.mean_volume = None
        self.activity = None
        self._spec_key = None
        self._spec = None

    # -- form helpers -------------------------------------------------------------------------------
    def _refresh_choices(self, event=None) -> None:
        for widget in (self.two_photon, self.light_fields, self.labels):
            widget.reset_choices()

    def _update_visibility(self, event=None) -> None:
        self.psf_file.visible = self.psf_source.value == "PSF file"

    def _inputs(self):
        """The 2P stack, its voxel size and the light-field series, checked."""
        tp_layer = require_layer(self.two_photon.value, "2P stack")
        lf_layer = require_layer(self.light_fields.value, "light-field series")
        if tp_layer is lf_layer:
            raise InputError("choose different layers for the 2P stack and the light-field series")
        if tp_layer.data.ndim != 3:
            raise InputError(f"the 2P stack must be 3D (z, y, x); layer {tp_layer.name!r} is {tp_layer.data.ndim}D")
        if lf_layer.data.ndim != 3:
            raise InputError(
                f"the light-field series must be 3D (t, v, u); layer {lf_layer.name!r} is {lf_layer.data.ndim}D"
            )
        text = str(self.voxel_2p.value).strip()
        if text:
            voxel = _triple(text, "2P voxel")
        elif any(abs(s - 1.0) > 1e-9 for s in tp_layer.scale):
            voxel = tuple(float(s) for s in tp_layer.scale)
        else:
            raise InputError("give the 2P voxel size (um), or set the 2P layer's scale")
        return tp_layer, lf_layer, voxel

    def _operator_spec(self, light_field_shape):
        if self.psf_source.value == "PSF file":
            path = optional_path(self.psf_file)
            if path is None:
                raise InputError("choose a PSF file (.zarr), or use the built-in sample microscope")
            psf = Path(path)
        else:
            psf = None
        key = (str(psf), tuple(light_field_shape))
        if self._spec_key != key:
            from napari_mbdl.fusion.api import resolve_operator
            from napari_mbdl.fusion.sample import sample_psf

            self._spec = resolve_operator(psf if psf is not None else sample_psf(), light_field_shape)
            self._spec_key = key
        return self._spec

    # -- steps ----------------------------------------------------------------------------------------
    def build_steps(self, cancel):
        step = self.step.value
        if step == STEPS[0]:
            return self._register_steps(cancel)
        if step == STEPS[1]:
            return self._segment_steps()
        return self._activity_steps(cancel)

    def _register_steps(self, cancel):
        from napari_mbdl.fusion.api import mean_volume, summarise_series_steps
        from napari_mbdl.fusion.register import register_stack, resample_to_lfm

        tp_layer, lf_layer, voxel = self._inputs()
        stack = np.asarray(tp_layer.data, np.float32)
        series = lf_layer.data

        def steps():
            spec = self._operator_spec(series.shape[1:])
            mean_lf, _ = yield from summarise_series_steps(series, cancel=cancel)
            yield Progress("mean volume", 0, 1, "Richardson-Lucy of the mean light field")
            volume = mean_volume(spec, mean_lf)
            yield Progress("registration", 0, 1)
            registration = register_stack(stack, voxel, volume, spec.lfm_voxel_um)
            self.registration, self.mean_volume = registration, volume
            overlay = resample_to_lfm(stack, registration.matrix, volume.shape)
            scale = spec.lfm_voxel_um
            meta = {"fusion_registration": registration.to_dict()}
            return [
                (volume, {"name": "fusion: mean LFM volume", "scale": scale, "colormap": "green",
                          "blending": "additive", "metadata": meta}, "image"),
                (overlay, {"name": "fusion: 2P registered", "scale": scale, "colormap": "magenta",
                           "blending": "additive", "metadata": meta}, "image"),
            ]

        return steps()

    def _segment_steps(self):
        from napari_mbdl.fusion.segment import segment_neurons

        tp_layer, _, voxel = self._inputs()
        stack = np.asarray(tp_layer.data, np.float32)
        radius = _triple(self.cell_radius.value, "cell radius")

        def steps():
            yield Progress("segmentation", 0, 1)
            labels = segment_neurons(stack, voxel, radius)
            return [(labels, {"name": LABELS_2P, "scale": voxel, "translate": tuple(tp_layer.translate)}, "labels")]

        return steps()

    def _activity_steps(self, cancel):
        from napari_mbdl.fusion.api import activity_steps

        tp_layer, lf_layer, voxel = self._inputs()
        if self.registration is None:
            raise InputError("run step 1 (register) first")
        if tuple(self.registration.two_photon_shape) != tuple(tp_layer.data.shape):
            raise InputError("the 2P stack changed since registration; run step 1 (register) again")
        labels_layer = self.labels.value
        if labels_layer is None:
            raise InputError("zero neurons: choose a 2P labels layer (run step 2, segment) first")
        labels = np.asarray(labels_layer.data)
        if labels.shape != tuple(tp_layer.data.shape):
            raise InputError(f"the labels layer {labels.shape} does not match the 2P stack {tp_layer.data.shape}")
        labels = labels.copy()  # the user may keep editing the layer while the run goes on
        series = lf_layer.data
        registration = self.registration
        device = self.device.value

        def steps():
            spec = self._operator_spec(series.shape[1:])
            result = yield from activity_steps(series, spec, labels, registration, device=device, cancel=cancel)
            self.activity = result
            scale = registration.lfm_voxel_um
            return [
                (result.lfm_labels, {"name": LABELS_LFM, "scale": scale, "opacity": 0.5}, "labels"),
                (np.asarray(result.volumes), {"name": ACTIVITY, "scale": (1.0, *scale), "colormap": "inferno",
                                              "blending": "additive"}, "image"),
            ]

        return steps()

    def on_result(self, layer_data: list) -> None:
        # Replace the layers of an earlier run of the same step rather than piling them up.
        for _, meta, _ in layer_data:
            name = meta.get("name")
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        added = self.add_layers(layer_data)
        for layer in added:
            if layer.name in (LABELS_2P, LABELS_LFM):
                layer.mouse_drag_callbacks.append(self._clicked)
        names = [layer.name for layer in added]
        if LABELS_2P in names:
            self.labels.reset_choices()
            self.labels.value = self.viewer.layers[LABELS_2P]
            self.step.value = STEPS[2] if self.registration is not None else STEPS[0]
            self.status.setText(f"{int(self.viewer.layers[LABELS_2P].data.max())} cells; edit the labels, then "
                                "run step 3 (activity)")
        elif ACTIVITY in names and self.activity is not None:
            self.trace_plot.set_traces(self.activity.dff, self.activity.label_ids)
            self.status.setText(f"activity of {len(self.activity.label_ids)} neurons over "
                                f"{self.activity.traces.shape[1]} frames; click a neuron or a trace")
        elif self.registration is not None:
            self.step.value = STEPS[1]
            self.status.setText(f"registered: {self.registration.describe()}")

    # -- neuron selection ----------------------------------------------------------------------------
    def _clicked(self, layer, event):
        value = layer.get_value(event.position, world=True)
        if value is None:
            return
        label = int(value)
        if label > 0:
            self.select_neuron(label)

    def select_neuron(self, label_id: int) -> None:
        """Highlight neuron ``label_id`` in the labels layers and its trace in the plot."""
        for name in (LABELS_2P, LABELS_LFM):
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.selected_label = int(label_id)
                layer.show_selected_label = True
        if self.trace_plot.highlighted != int(label_id):
            self.trace_plot.highlight(label_id)

    # -- export ---------------------------------------------------------------------------------------
    def export(self, event=None):
        """Write the traces as CSV and zarr into the export folder."""
        from napari.utils.notifications import show_error, show_info

        from napari_mbdl.fusion.api import export_traces

        try:
            if self.activity is None:
                raise InputError("no traces yet: run step 3 (activity) first")
            folder = optional_path(self.export_folder)
            if folder is None:
                raise InputError("choose an export folder")
            paths = export_traces(self.activity, Path(folder))
        except Exception as error:
            message = str(error) if isinstance(error, MBDLError) else f"failed: {type(error).__name__}: {error}"
            self.last_error = message
            self.status.setText(message)
            show_error(f"{self.title}: {message}")
            return None
        self.status.setText(f"traces written to {paths['csv'].parent}")
        show_info(f"{self.title}: traces written to {paths['csv'].parent}")
        return paths
