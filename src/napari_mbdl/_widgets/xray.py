"""Dock widget "X-ray separation": split a mixed X-ray into the X-rays of a painting's two sides."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox, create_widget

from napari_mbdl._widgets._base import JobWidget, layer_metadata, require_layer
from napari_mbdl.engine.errors import InputError
from napari_mbdl.engine.progress import CancelToken, Progress
from napari_mbdl.xray_separation.training import SeparationConfig

PREVIEW_NAMES = ("xray: side 1 (training preview)", "xray: side 2 (training preview)")


def _layer_array(layer, what: str, rgb: bool):
    """The layer's data (napari keeps only the finest level of multiscale data)."""
    layer = require_layer(layer, what)
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if rgb and not getattr(layer, "rgb", False) and np.ndim(data) == 2:
        raise InputError(f"the {what} layer {layer.name!r} is greyscale; an RGB photograph is expected")
    return layer, data


class XraySeparationWidget(JobWidget):
    """Train the unfolded separator on the open painting and separate its mixed X-ray."""

    title = "X-ray separation"
    run_text = "Separate"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        self.mixed = create_widget(annotation=napari.layers.Image, label="mixed X-ray")
        self.rgb1 = create_widget(annotation=napari.layers.Image, label="photograph side 1")
        self.rgb2 = create_widget(annotation=napari.layers.Image, label="photograph side 2",
                                  options={"nullable": True})
        self.iterations = SpinBox(label="training iterations", value=200, min=0, max=100_000, step=50)
        self.minutes = FloatSpinBox(label="or at most (minutes)", value=5.0, min=0.1, max=600.0, step=0.5)
        self.preview_every = SpinBox(label="preview every (iterations)", value=25, min=1, max=10_000)
        # the minimum (-0.01) reads "auto" (SeparationConfig.AUTO_EXCLUSION)
        self.exclusion = FloatSpinBox(label="exclusion weight", value=-0.01, min=-0.01, max=1.0, step=0.01,
                                      tooltip="how strongly the two sides' edges are kept apart, in the "
                                              "training loss (auto: 0.005 with one photograph; 0 with two, "
                                              "where the exclusion shares what the photographs leave "
                                              "unexplained by the sides' edges); 0 is the model without "
                                              "its exclusion term; results are sensitive to it")
        self.exclusion.native.setDecimals(3)
        self.exclusion.native.setSpecialValueText("auto")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.check_alignment = CheckBox(label="check registration", value=True)
        self.align_button = PushButton(text="Align photographs to the X-ray")
        self.form.extend([self.mixed, self.rgb1, self.rgb2, self.iterations, self.minutes, self.preview_every,
                          self.exclusion, self.device, self.check_alignment, self.align_button])
        self.align_button.changed.connect(self.align_photographs)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()
        self._stop_training: CancelToken | None = None
        self._training = False
        self.last_separation = None

    def _refresh_choices(self, event=None) -> None:
        for widget in (self.mixed, self.rgb1, self.rgb2):
            widget.reset_choices()
        # sensible defaults: a greyscale layer for the X-ray, an RGB layer for side 1
        layers = list(self.viewer.layers)
        grey = [la for la in layers if getattr(la, "rgb", None) is False and la.ndim == 2
                and "true X-ray" not in la.name and "preview" not in la.name and "separated" not in la.name]
        colour = [la for la in layers if getattr(la, "rgb", False)]
        if grey and (self.mixed.value is None or getattr(self.mixed.value, "rgb", False)):
            self.mixed.value = grey[-1]
        if colour and (self.rgb1.value is None or not getattr(self.rgb1.value, "rgb", False)):
            self.rgb1.value = colour[0]

    # -- inputs -----------------------------------------------------------------------------------
    def _inputs(self):
        mixed_layer, mixed = _layer_array(self.mixed.value, "mixed X-ray", rgb=False)
        if getattr(mixed_layer, "rgb", False):
            raise InputError(f"the mixed X-ray layer {mixed_layer.name!r} is a colour image; choose the greyscale X-ray")
        _, rgb1 = _layer_array(self.rgb1.value, "photograph side 1", rgb=True)
        rgb2 = None
        if self.rgb2.value is not None:
            if self.rgb2.value is self.rgb1.value:
                raise InputError("choose different photographs for side 1 and side 2 (or none for side 2)")
            _, rgb2 = _layer_array(self.rgb2.value, "photograph side 2", rgb=True)
        return mixed_layer, mixed, rgb1, rgb2

    def align_photographs(self, event=None) -> None:
        """Add copies of the photographs resized/mirrored/shifted onto the X-ray (inputs untouched)."""
        from napari.utils.notifications import show_error, show_info

        from napari_mbdl.xray_separation.registration import align_to_xray

        try:
            mixed_layer, mixed, rgb1, rgb2 = self._inputs()
            for layer, data in ((self.rgb1.value, rgb1), (self.rgb2.value, rgb2)):
                if data is None:
                    continue
                data = np.asarray(data)
                aligned, alignment = align_to_xray(data, np.asarray(mixed))
                if data.dtype.kind in "ui":  # keep napari's RGB convention: floats in [0, 1]
                    aligned = aligned / float(np.iinfo(data.dtype).max)
                new = self.viewer.add_image(aligned, name=f"{layer.name} (aligned)", rgb=True,
                                            scale=tuple(mixed_layer.scale), translate=tuple(mixed_layer.translate))
                if layer is self.rgb1.value:
                    self.rgb1.value = new
                else:
                    self.rgb2.value = new
                show_info(f"{layer.name}: shift {alignment.shift[0]:.1f}, {alignment.shift[1]:.1f} px"
                          + (", mirrored" if alignment.mirrored else "")
                          + f", zoom {alignment.scale[0]:.3g}")
        except InputError as error:
            self.last_error = str(error)
            show_error(f"{self.title}: {error}")

    # -- running ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """During training: stop and separate with the best network so far; later: stop."""
        if self._training and self._stop_training is not None:
            self._stop_training.cancel()
            self.status.setText("Stopping training; separating with the best network so far...")
            return
        super().cancel()

    def build_steps(self, cancel: CancelToken):
        mixed_layer, mixed, rgb1, rgb2 = self._inputs()
        config = SeparationConfig(iterations=int(self.iterations.value), max_minutes=float(self.minutes.value),
                                  preview_every=int(self.preview_every.value),
                                  weight_exclusion=None if self.exclusion.value < 0 else float(self.exclusion.value))
        meta = layer_metadata(mixed_layer)
        self._stop_training = CancelToken()
        check = bool(self.check_alignment.value)
        device = self.device.value

        def steps():
            from napari_mbdl.xray_separation.api import separate_xray_steps

            self._training = True
            try:
                run = separate_xray_steps(mixed, rgb1, rgb2, config=config, device=device, check_alignment=check,
                                          cancel=cancel, stop_training=self._stop_training)
                while True:
                    try:
                        event = next(run)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    if event.stage != "training":
                        self._training = False
                    yield event
            finally:
                self._training = False
            self.last_separation = result
            trained = result.trained
            note = trained.summary()
            yield Progress("done", 1, 1, note)
            common = {"scale": meta["scale"], "translate": meta["translate"]}
            error = np.abs(np.asarray(result.error))
            top = float(np.percentile(error, 99.5)) or 1e-6
            return [
                (np.asarray(result.side1), {"name": "xray: separated side 1", "colormap": "gray", **common,
                                            "metadata": {"xray_separation": note}}, "image"),
                (np.asarray(result.side2), {"name": "xray: separated side 2", "colormap": "gray", **common,
                                            "metadata": {"xray_separation": note}}, "image"),
                (error, {"name": "xray: re-synthesis error", "colormap": "magma",
                         "contrast_limits": (0.0, top), **common}, "image"),
            ]

        return steps()

    def on_preview(self, preview) -> None:
        """Show the current separation of the central crop while training."""
        top, left = preview.get("origin", (0, 0))
        layer = self.mixed.value
        scale = np.asarray(layer.scale) if layer is not None else np.ones(2)
        translate = (np.asarray(layer.translate) if layer is not None else np.zeros(2)) + scale * np.array([top, left])
        for name, key in zip(PREVIEW_NAMES, ("side1", "side2")):
            data = preview[key]
            if name in self.viewer.layers:
                shown = self.viewer.layers[name]
                shown.data = data
                shown.reset_contrast_limits()
            else:
                self.viewer.add_image(data, name=name, colormap="gray", scale=scale, translate=translate,
                                      visible=key == "side2")

    def on_result(self, layer_data: list) -> None:
        for name in PREVIEW_NAMES:  # the final layers supersede the previews
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.add_layers(layer_data)
