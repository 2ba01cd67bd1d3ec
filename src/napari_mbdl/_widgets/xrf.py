"""Dock widget "XRF elemental maps": sum spectrum with detected lines, element choice, region and cursor spectra."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton, Select, create_widget
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_mbdl._widgets._base import JobWidget, require_layer, result_store
from napari_mbdl.engine.errors import InputError
from napari_mbdl.engine.progress import Progress


class SpectrumPlot(QWidget):
    """The sum spectrum (log counts) with labelled line families, plus region / cursor spectra."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.axes = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.sum_line = None
        self.overlays: dict[str, object] = {}
        self.labels: list = []
        self._set_axis_labels()

    def _set_axis_labels(self):
        self.axes.set_xlabel("energy (keV)")
        self.axes.set_ylabel("counts")

    def set_sum(self, energies, spectrum, pulses=(), labels=None) -> None:
        """Draw the sum spectrum and mark each labelled pulse; name each family once, at its strongest pulse."""
        labels = labels or {}
        self.axes.clear()
        self.overlays = {}
        (self.sum_line,) = self.axes.semilogy(energies, np.clip(spectrum, 0.5, None), lw=0.8, color="k", label="sum")
        self.labels = []
        strongest: dict[str, object] = {}
        for index, pulse in enumerate(pulses):
            label = labels.get(index)
            if label is None:
                continue
            self.axes.axvline(pulse.energy, color="tab:red", lw=0.5, alpha=0.5)
            if label not in strongest or pulse.area > strongest[label].area:
                strongest[label] = pulse
        for label, pulse in strongest.items():
            height = float(np.interp(pulse.energy, energies, spectrum))
            self.labels.append(self.axes.annotate(label, (pulse.energy, max(height, 1.0)), fontsize=7, rotation=90,
                                                  xytext=(0, 4), textcoords="offset points", ha="center"))
        self._set_axis_labels()
        self.axes.set_xlim(float(energies[0]), float(energies[-1]))
        self.canvas.draw_idle()

    def set_overlay(self, name: str, energies, spectrum, color: str, label: str | None = None) -> None:
        """Show (or replace) a named extra spectrum, e.g. a region or the pixel under the cursor."""
        old = self.overlays.pop(name, None)
        if old is not None:
            old.remove()
        (line,) = self.axes.semilogy(energies, np.clip(spectrum, 0.5, None), lw=0.8, color=color, label=label or name)
        self.overlays[name] = line
        self.axes.legend(fontsize=7, loc="upper right")
        self.canvas.draw_idle()


def _energy_axis(layer) -> int:
    """Which axis of an image layer holds the spectra: metadata axes, then axis labels, then the longest."""
    axes = (layer.metadata or {}).get("axes")
    shape = layer.data.shape
    if isinstance(axes, str) and len(axes) == len(shape):
        for letter in "ce":
            if letter in axes:
                return axes.index(letter)
    labels = [str(a).lower() for a in (getattr(layer, "axis_labels", None) or ())]
    if "energy" in labels:
        return labels.index("energy")
    return int(np.argmax(shape))


def _axis_letters(energy_axis: int) -> str:
    letters = iter("yx")
    return "".join("c" if i == energy_axis else next(letters) for i in range(3))


def _parse_line(text: str):
    from napari_mbdl.xrf.lines import main_line_energy

    try:
        channel, line = text.split(":")
        return float(channel), main_line_energy(line.strip())
    except ValueError:
        raise InputError(f"write a calibration line as channel:line, e.g. 640:Fe or 1055:Pb-La (got {text!r})") from None


class XRFWidget(JobWidget):
    """Detect the elements of an MA-XRF cube and map each one (quantity + confidence)."""

    title = "XRF elemental maps"
    run_text = "Map elements"

    def __init__(self, napari_viewer, parent=None):
        import napari

        super().__init__(napari_viewer, parent)
        self.cube = create_widget(annotation=napari.layers.Image, label="cube")
        self.offset = FloatSpinBox(label="offset (keV)", min=-20.0, max=20.0, step=0.001, value=0.0)
        self.gain = FloatSpinBox(label="gain (eV/channel)", min=0.0, max=1000.0, step=0.001, value=0.0,
                                 tooltip="0 = no calibration yet (taken from the layer's metadata when it has one)")
        self.line_1 = LineEdit(label="line 1", value="", tooltip="channel:line, e.g. 640:Fe (K-alpha) or 1055:Pb-La")
        self.line_2 = LineEdit(label="line 2", value="")
        self.calibrate_button = PushButton(text="Calibrate from two lines")
        self.method = ComboBox(label="method", choices=["fri", "linear"], value="fri",
                               tooltip="fri: FRI pulses, refined calibration, local detection, non-negative fit; "
                                       "linear: PyMca-style fast linear fit")
        self.detect_button = PushButton(text="Detect elements")
        self.elements = Select(label="elements", choices=[], tooltip="detected elements; deselect to leave out")
        self.add_elements = LineEdit(label="add elements", value="", tooltip="e.g. Sn,Co")
        self.region = create_widget(annotation=napari.layers.Shapes, label="region")
        self.region_button = PushButton(text="Region spectrum")
        self.follow_cursor = CheckBox(text="spectrum under the cursor", value=True)
        self.output = LineEdit(label="save to", value="", tooltip="optional *.zarr for the maps (resumable)")
        self.form.extend([
            self.cube, self.offset, self.gain, Container(widgets=[self.line_1, self.line_2], labels=True),
            self.calibrate_button, self.method, self.detect_button, self.elements, self.add_elements,
            self.region, self.region_button, self.follow_cursor, self.output,
        ])
        self.plot = SpectrumPlot()
        self.layout().insertWidget(self.layout().count() - 1, self.plot)

        self.detection = None
        self.last_xrf_result = None
        self._detect_only = False
        self._last_pixel = None
        self.cube.changed.connect(self._cube_changed)
        self.calibrate_button.changed.connect(self.calibrate)
        self.detect_button.changed.connect(self.detect)
        self.region_button.changed.connect(self.region_spectrum)
        napari_viewer.mouse_move_callbacks.append(self._mouse_moved)
        napari_viewer.layers.events.inserted.connect(self._refresh_choices)
        napari_viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()
        self._cube_changed(self.cube.value)

    def _refresh_choices(self, event=None) -> None:
        for picker in (self.cube, self.region):
            picker.reset_choices()

    # -- inputs ------------------------------------------------------------------------------------
    def _cube_changed(self, layer) -> None:
        self.detection = None
        self.elements.choices = []
        self._last_pixel = None
        if layer is None:
            return
        calibration = (layer.metadata or {}).get("xrf_energy")
        if isinstance(calibration, dict) and "gain_keV" in calibration:
            self.offset.value = float(calibration.get("offset_keV", 0.0))
            self.gain.value = 1000.0 * float(calibration["gain_keV"])

    def _calibration(self):
        from napari_mbdl.xrf.spectral import EnergyCalibration

        if self.gain.value <= 0:
            raise InputError("the cube has no energy calibration: enter offset and gain, or calibrate from two known lines")
        return EnergyCalibration(float(self.offset.value), float(self.gain.value) / 1000.0)

    def _cube_array(self):
        """The cube layer, its energy axis, and a LabeledArray view of its data (never copied, never modified)."""
        from napari_mbdl.io.arrays import LabeledArray

        layer = require_layer(self.cube.value, "cube")
        if getattr(layer, "multiscale", False):
            raise InputError("multiscale cubes are not supported; open the full-resolution cube")
        if len(layer.data.shape) != 3:
            raise InputError(f"the cube layer {layer.name!r} must have three axes (energy, y, x); it has shape {layer.data.shape}")
        energy_axis = _energy_axis(layer)
        return layer, energy_axis, LabeledArray(layer.data, axes=_axis_letters(energy_axis), name=layer.name)

    def _elements_choice(self):
        extra = [s.strip() for s in self.add_elements.value.split(",") if s.strip()]
        if self.detection is not None and self.elements.choices:
            chosen = list(self.elements.value) + [e for e in extra if e not in self.elements.value]
            if not chosen:
                raise InputError("no element is selected; select at least one or detect again")
            return chosen, ()
        return "auto", extra

    # -- actions -----------------------------------------------------------------------------------
    def detect(self, *_, sync: bool = False):
        """Stream the sum spectrum and detect the elements (fills the element list and the plot)."""
        self._detect_only = True
        try:
            return self.run(sync=sync)
        finally:
            self._detect_only = False

    def build_steps(self, cancel):
        from napari_mbdl.xrf.api import detect_steps, prepare_cube, xrf_maps_steps

        layer, energy_axis, labeled = self._cube_array()
        calibration = self._calibration()
        method = self.method.value
        if self._detect_only:
            cube, calibration = prepare_cube(labeled, calibration, energy_axis)

            def detect_only():
                yield from detect_steps(cube, calibration, "auto", refine_calibration=(method == "fri"), cancel=cancel)
                return []

            return detect_only()
        elements, add = self._elements_choice()
        out = self.output.value.strip() or None
        if out is not None and not out.lower().endswith((".zarr", ".tif", ".tiff")):
            raise InputError("save the maps to a *.zarr (or *.tif) path")
        spatial = [a for a in range(3) if a != energy_axis]
        if out is None:  # maps of a huge scan stream to a cache zarr, shown lazily
            n_maps = 2 * (len(elements) if isinstance(elements, (list, tuple)) else 30)
            out = result_store(f"{layer.name} maps", 4.0 * n_maps * np.prod([layer.data.shape[a] for a in spatial]))
        scale = tuple(float(layer.scale[a]) for a in spatial)
        translate = tuple(float(layer.translate[a]) for a in spatial)

        def steps():
            from napari_mbdl.xrf.layers import result_layers

            result = yield from xrf_maps_steps(
                labeled, calibration, elements, add=add, method=method, energy_axis=energy_axis, out=out,
                overwrite=False, cancel=cancel,
            )
            for message in result.warnings:
                yield Progress("elemental maps", 1, 1, message)
            self.last_xrf_result = result
            return result_layers(result, scale=scale, translate=translate)

        return steps()

    def on_preview(self, preview) -> None:
        from napari_mbdl.xrf.api import Detection

        if isinstance(preview, Detection):
            self.detection = preview
            identification = preview.identification
            self.plot.set_sum(preview.energies, preview.sum_spectrum, identification.pulses, identification.labels)
            self.elements.choices = list(identification.elements)
            self.elements.value = list(identification.elements)
            if preview.warnings:
                from napari.utils.notifications import show_warning

                for message in preview.warnings:
                    show_warning(f"{self.title}: {message}")

    def calibrate(self, *_):
        """Fit offset and gain from two 'channel:line' entries on the cube's (subsampled) sum spectrum."""
        from napari.utils.notifications import show_error, show_info

        from napari_mbdl.engine.errors import MBDLError
        from napari_mbdl.xrf.spectral import calibrate_two_lines

        try:
            layer, energy_axis, _ = self._cube_array()
            first, second = _parse_line(self.line_1.value), _parse_line(self.line_2.value)
            data = layer.data
            n_pixels = np.prod([data.shape[a] for a in range(3) if a != energy_axis])
            step = max(1, int(np.sqrt(n_pixels / 4096.0)))        # ~4096 spectra are enough to find two peaks
            index = [slice(None, None, step)] * 3
            index[energy_axis] = slice(None)
            block = np.asarray(data[tuple(index)], dtype=np.float64)
            spectrum = block.sum(axis=tuple(a for a in range(3) if a != energy_axis))
            calibration = calibrate_two_lines(spectrum, first, second)
        except MBDLError as error:
            self.last_error = str(error)
            show_error(f"{self.title}: {error}")
            return None
        self.offset.value = calibration.offset
        self.gain.value = 1000.0 * calibration.gain
        show_info(f"{self.title}: offset {calibration.offset:.4f} keV, gain {1000 * calibration.gain:.3f} eV/channel")
        return calibration

    def region_spectrum(self, *_):
        """Sum the spectra inside the shapes of the region layer and overlay them on the plot."""
        from napari.utils.notifications import show_error
        from skimage.draw import polygon

        try:
            layer, energy_axis, _ = self._cube_array()
            calibration = self._calibration()
            shapes = self.region.value
            if shapes is None or len(shapes.data) == 0:
                raise InputError("draw a region in a shapes layer and choose it as the region first")
            spatial = [a for a in range(3) if a != energy_axis]
            size = tuple(layer.data.shape[a] for a in spatial)
            mask = np.zeros(size, dtype=bool)
            for vertices in shapes.data:
                world = np.asarray([shapes.data_to_world(v) for v in vertices])
                local = np.asarray([layer.world_to_data(_pad(w, layer.ndim)) for w in world])[:, spatial]
                rows, cols = polygon(local[:, 0], local[:, 1], shape=size)
                mask[rows, cols] = True
            if not mask.any():
                raise InputError("the region shapes cover no pixel of the cube")
            rows, cols = np.nonzero(mask)
            box = [slice(None)] * 3
            box[spatial[0]] = slice(rows.min(), rows.max() + 1)
            box[spatial[1]] = slice(cols.min(), cols.max() + 1)
            block = np.moveaxis(np.asarray(layer.data[tuple(box)], dtype=np.float64), energy_axis, -1)
            spectrum = block[mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]].sum(axis=0)
        except InputError as error:
            self.last_error = str(error)
            show_error(f"{self.title}: {error}")
            return None
        self.plot.set_overlay("region", calibration.energies(spectrum.size), spectrum, "tab:blue",
                              label=f"region ({int(mask.sum())} px)")
        return spectrum

    def show_pixel_spectrum(self, row: int, col: int):
        """Overlay the spectrum of one pixel."""
        layer, energy_axis, _ = self._cube_array()
        calibration = self._calibration()
        index = [row, col]
        index.insert(energy_axis, slice(None))
        spectrum = np.asarray(layer.data[tuple(index)], dtype=np.float64)
        self.plot.set_overlay("pixel", calibration.energies(spectrum.size), spectrum, "tab:orange",
                              label=f"pixel ({row}, {col})")
        return spectrum

    def _mouse_moved(self, viewer, event) -> None:
        if not self.follow_cursor.value or self.cube.value is None or self.gain.value <= 0:
            return
        layer = self.cube.value
        try:
            energy_axis = _energy_axis(layer)
            position = layer.world_to_data(event.position)
            spatial = [a for a in range(3) if a != energy_axis]
            row, col = (int(round(position[a])) for a in spatial)
            if not (0 <= row < layer.data.shape[spatial[0]] and 0 <= col < layer.data.shape[spatial[1]]):
                return
            if (row, col) == self._last_pixel:
                return
            self._last_pixel = (row, col)
            self.show_pixel_spectrum(row, col)
        except Exception:  # a hover must never raise into napari's event loop
            return


def _pad(world, ndim):
    world = np.asarray(world, dtype=float)
    if world.size >= ndim:
        return world[-ndim:]
    return np.concatenate([np.zeros(ndim - world.size), world])
