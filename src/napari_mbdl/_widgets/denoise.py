"""Dock widgets "Denoise (invertible network)", "Deblur (plug-and-play)" and "Train denoiser"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, SpinBox, create_widget

from napari_mbdl._widgets._base import JobWidget, layer_metadata, optional_path, require_layer, result_store
from napari_mbdl.engine.errors import InputError


def _layer_array(layer, what: str):
    """The (full-resolution) data of an image layer; RGB layers refused."""
    layer = require_layer(layer, what)
    if getattr(layer, "rgb", False):
        raise InputError(f"the {what} layer {layer.name!r} is RGB; convert it to grey first")
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return layer, data


def _optional_path(widget, suffixes: tuple[str, ...]) -> str | None:
    """:func:`optional_path`, refusing a name without one of ``suffixes`` (e.g. a folder)."""
    text = optional_path(widget)
    if text is not None and not text.lower().endswith(suffixes):
        raise InputError(f"{widget.label or 'the file'} must end with {' or '.join(suffixes)}: {text}")
    return text


class _LayerPickers:
    """Keep the layer pickers of a widget in sync with the viewer's layer list."""

    def _watch_layers(self, *pickers) -> None:
        self._pickers = pickers
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)

    def _refresh_choices(self, event=None) -> None:
        for picker in self._pickers:
            picker.reset_choices()


class DenoiseWidget(JobWidget, _LayerPickers):
    """Denoise an image layer (2D, 3D, time series; any dtype) with LINN or WINNet."""

    title = "Denoise (invertible network)"
    run_text = "Denoise"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.model = ComboBox(label="model", choices=["winnet", "linn"], value="winnet")
        self.noise = ComboBox(label="noise", choices=["gaussian", "poisson-gaussian"], value="gaussian")
        self.auto_sigma = CheckBox(text="estimate the noise level (NENet)", value=True)
        self.sigma = FloatSpinBox(label="sigma (0-255 scale)", value=25.0, min=0.5, max=75.0, step=0.5)
        self.gain = FloatSpinBox(label="gain (0 = estimate)", value=0.0, min=0.0, max=1e6, step=0.1)
        self.read_noise = FloatSpinBox(label="read noise", value=0.0, min=0.0, max=1e6, step=0.1)
        self.ensemble = CheckBox(text="self-ensemble of 8 flips/rotations (~0.1 dB better, 8x slower)",
                                 value=False)
        self.precision = ComboBox(label="precision", value="float32", choices=[
            ("float32", "float32"), ("bfloat16 (within 0.02 dB; faster on CPUs with bfloat16 units)", "bfloat16")])
        self.bands = CheckBox(text="add detail bands before/after thresholding (current plane)", value=False)
        self.weights = FileEdit(label="weights file (optional)", mode="r", filter="*.safetensors")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.output = FileEdit(label="save to (.zarr, optional)", mode="w", filter="*.zarr")
        self.estimate = LineEdit(label="noise level used", value="")
        self.estimate.enabled = False
        self.last_sigma = ""
        self.form.extend([self.image, self.model, self.noise, self.auto_sigma, self.sigma, self.gain,
                          self.read_noise, self.ensemble, self.precision, self.bands, self.weights, self.device,
                          self.output,
                          self.estimate])
        self.noise.changed.connect(self._update_visibility)
        self.auto_sigma.changed.connect(self._update_visibility)
        self._watch_layers(self.image)
        self._update_visibility()

    def _update_visibility(self, event=None) -> None:
        poisson = self.noise.value == "poisson-gaussian"
        self.auto_sigma.visible = not poisson
        self.sigma.visible = not poisson and not self.auto_sigma.value
        self.gain.visible = poisson
        self.read_noise.visible = poisson

    def build_steps(self, cancel):
        from napari_mbdl.denoise.api import denoise_steps, detail_bands

        layer, data = _layer_array(self.image.value, "image")
        poisson = self.noise.value == "poisson-gaussian"
        want_bands = bool(self.bands.value)
        if want_bands and poisson:
            raise InputError("detail bands are shown for Gaussian noise only")
        sigma = "auto" if self.auto_sigma.value else float(self.sigma.value)
        gain = float(self.gain.value) if poisson and self.gain.value > 0 else None
        kwargs = dict(
            model=self.model.value, sigma=sigma, noise=self.noise.value, gain=gain,
            read_noise=float(self.read_noise.value) if gain else None,
            weights=_optional_path(self.weights, (".safetensors",)), self_ensemble=bool(self.ensemble.value),
            precision=self.precision.value, device=self.device.value,
            # a large result streams to a cache zarr and is shown lazily, never held in RAM
            out=_optional_path(self.output, (".zarr",)) or result_store(f"{layer.name} denoised", 4.0 * data.size),
            overwrite=False, cancel=cancel,
        )
        meta = layer_metadata(layer)
        plane_index = tuple(self.viewer.dims.current_step[: data.ndim - 2]) if data.ndim > 2 else ()
        name = layer.name

        def steps():
            result = yield from denoise_steps(data, **kwargs)
            # shown by on_result on the main thread (Qt widgets must not be touched from the worker)
            self.last_sigma = f"{result.sigma:.2f}" + (" (estimated)" if result.sigma_estimated else "")
            how = "auto " if result.sigma_estimated else ""
            views = ", 8-view ensemble" if result.self_ensemble else ""
            views += "" if result.precision == "float32" else f", {result.precision}"
            layers = [(result.array, {**meta, "name": f"{name} denoised ({Path(result.weights).stem}, "
                                                      f"{how}sigma {result.sigma:.1f}{views})"}, "image")]
            if want_bands:
                plane = np.asarray(data[plane_index]) if plane_index else np.asarray(data)
                before, after, _ = detail_bands(plane, model=kwargs["model"], sigma=result.sigma,
                                                weights=kwargs["weights"])
                yx = {k: tuple(v[-2:]) for k, v in meta.items() if k in ("scale", "translate")}
                for level, (b, a) in enumerate(zip(before, after), start=1):
                    layers.append((b, {**yx, "name": f"{name} z_d scale {level} before thresholding"}, "image"))
                    layers.append((a, {**yx, "name": f"{name} z_d scale {level} after thresholding"}, "image"))
            return layers

        return steps()

    def on_result(self, layer_data) -> None:
        self.estimate.value = self.last_sigma
        self.add_layers(layer_data)


class DeblurWidget(JobWidget, _LayerPickers):
    """Plug-and-play deblurring with a Gaussian, motion, or image kernel; iterations shown as progress."""

    title = "Deblur (plug-and-play)"
    run_text = "Deblur"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        self.image = create_widget(annotation=napari.layers.Image, label="blurred image")
        self.kernel_kind = ComboBox(label="kernel", choices=["gaussian", "motion", "image layer"], value="gaussian")
        self.width = FloatSpinBox(label="Gaussian sigma (px)", value=1.6, min=0.1, max=50, step=0.1)
        self.length = FloatSpinBox(label="motion length (px)", value=9.0, min=1, max=200, step=1)
        self.angle = FloatSpinBox(label="motion angle (deg)", value=0.0, min=-180, max=180, step=5)
        self.kernel_layer = create_widget(annotation=napari.layers.Image, label="kernel layer",
                                          options={"nullable": True})
        self.model = ComboBox(label="denoiser", choices=["winnet", "linn"], value="winnet")
        self.auto_sigma = CheckBox(text="estimate the noise level (NENet)", value=True)
        self.sigma = FloatSpinBox(label="sigma (0-255 scale)", value=5.0, min=0.5, max=75, step=0.5)
        self.lam = FloatSpinBox(label="lambda", value=0.23, min=0.001, max=100, step=0.01)
        self.max_iter = SpinBox(label="max iterations", value=30, min=1, max=500)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.form.extend([self.image, self.kernel_kind, self.width, self.length, self.angle, self.kernel_layer,
                          self.model, self.auto_sigma, self.sigma, self.lam, self.max_iter, self.device])
        self.kernel_kind.changed.connect(self._update_visibility)
        self.auto_sigma.changed.connect(self._update_visibility)
        self._watch_layers(self.image, self.kernel_layer)
        self._update_visibility()
        self._preview_layer = None

    def _update_visibility(self, event=None) -> None:
        kind = self.kernel_kind.value
        self.width.visible = kind == "gaussian"
        self.length.visible = self.angle.visible = kind == "motion"
        self.kernel_layer.visible = kind == "image layer"
        self.sigma.visible = not self.auto_sigma.value

    def kernel(self) -> np.ndarray:
        from napari_mbdl.denoise.deblur import gaussian_kernel, motion_kernel

        kind = self.kernel_kind.value
        if kind == "gaussian":
            return gaussian_kernel(float(self.width.value))
        if kind == "motion":
            return motion_kernel(float(self.length.value), float(self.angle.value))
        layer = require_layer(self.kernel_layer.value, "kernel")
        k = np.asarray(layer.data)
        if k.ndim != 2:
            raise InputError(f"the kernel layer must be 2D, not shape {k.shape}")
        return k

    def build_steps(self, cancel):
        from napari_mbdl.denoise.deblur import deblur_steps

        layer, data = _layer_array(self.image.value, "blurred image")
        kernel = self.kernel()
        meta = layer_metadata(layer)
        name = layer.name
        steps = deblur_steps(
            data, kernel, model=self.model.value, sigma="auto" if self.auto_sigma.value else float(self.sigma.value),
            lam=float(self.lam.value), max_iter=int(self.max_iter.value), device=self.device.value, cancel=cancel,
        )

        def run():
            result = yield from steps
            return [(result.array, {**meta, "name": f"{name} deblurred ({sum(result.iterations)} iterations)"},
                     "image")]

        return run()

    def on_preview(self, preview) -> None:
        if not isinstance(preview, dict) or "image" not in preview:
            return
        if self._preview_layer is None or self._preview_layer not in self.viewer.layers:
            self._preview_layer = self.viewer.add_image(preview["image"], name="deblur: current iterate")
        else:
            self._preview_layer.data = preview["image"]

    def on_result(self, layer_data) -> None:
        if self._preview_layer is not None and self._preview_layer in self.viewer.layers:
            self.viewer.layers.remove(self._preview_layer)
        self._preview_layer = None
        self.add_layers(layer_data)


class TrainDenoiserWidget(JobWidget, _LayerPickers):
    """Fine-tune or train a denoiser on the user's layers, with a live loss plot; saves a weights file."""

    title = "Train denoiser"
    run_text = "Train"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        self.clean = create_widget(annotation=napari.layers.Image, label="clean images")
        self.noisy = create_widget(annotation=napari.layers.Image, label="noisy partner (optional)",
                                   options={"nullable": True})
        self.model = ComboBox(label="model", choices=["winnet", "linn"], value="winnet")
        self.start = ComboBox(label="start from", choices=["shipped blind model", "scratch", "weights file"],
                              value="shipped blind model")
        self.init_file = FileEdit(label="initial weights", mode="r", filter="*.safetensors")
        self.blind = CheckBox(text="blind (noise range)", value=False)
        self.sigma = FloatSpinBox(label="sigma (0-255 scale)", value=25.0, min=0.5, max=75, step=0.5)
        self.sigma_high = FloatSpinBox(label="sigma high (blind)", value=55.0, min=1, max=75, step=0.5)
        self.steps = SpinBox(label="steps", value=200, min=1, max=1_000_000)
        self.lr = FloatSpinBox(label="learning rate", value=5e-4, min=1e-6, max=1e-1, step=1e-4)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.output = FileEdit(label="save weights to", mode="w", filter="*.safetensors")
        self.form.extend([self.clean, self.noisy, self.model, self.start, self.init_file, self.blind, self.sigma,
                          self.sigma_high, self.steps, self.lr, self.device, self.output])
        self.start.changed.connect(self._update_visibility)
        self.blind.changed.connect(self._update_visibility)
        self._watch_layers(self.clean, self.noisy)
        self._update_visibility()
        self.losses: list[tuple[int, float]] = []
        self._canvas = None
        self._make_plot()

    def _make_plot(self) -> None:
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except Exception:  # no Qt backend for matplotlib: the status line still shows the loss
            return
        figure = Figure(figsize=(3, 2), tight_layout=True)
        self._axes = figure.add_subplot(111)
        self._axes.set_xlabel("step")
        self._axes.set_ylabel("training loss (MSE)")
        self._canvas = FigureCanvasQTAgg(figure)
        self._canvas.setMinimumHeight(160)
        self.layout().insertWidget(self.layout().count() - 1, self._canvas)

    def _update_visibility(self, event=None) -> None:
        self.init_file.visible = self.start.value == "weights file"
        self.sigma_high.visible = bool(self.blind.value)
        self.sigma.label = "sigma low (blind)" if self.blind.value else "sigma (0-255 scale)"

    def build_steps(self, cancel):
        from napari_mbdl.denoise.trainer import train_denoiser_steps

        _, clean = _layer_array(self.clean.value, "clean")
        noisy = None
        if self.noisy.value is not None:
            _, noisy = _layer_array(self.noisy.value, "noisy")
            noisy = np.asarray(noisy)
        out = _optional_path(self.output, (".safetensors",))
        if out is None:
            raise InputError("choose a file to save the trained weights to")
        if Path(out).exists():
            raise InputError(f"{out} already exists; choose a new file name (nothing is overwritten)")
        if self.start.value == "weights file":
            init = _optional_path(self.init_file, (".safetensors",))
            if init is None:
                raise InputError("choose the initial weights file")
        else:
            init = "shipped" if self.start.value == "shipped blind model" else None
        if self.blind.value:
            sigma = (float(self.sigma.value), float(self.sigma_high.value))
        else:
            sigma = float(self.sigma.value)
        self.losses = []
        return train_denoiser_steps(
            np.asarray(clean), noisy=noisy, model=self.model.value, init=init, sigma=sigma,
            steps=int(self.steps.value), lr=float(self.lr.value), out=out, checkpoint=str(out) + ".ckpt.pt",
            cancel=cancel, device=self.device.value,
        )

    def on_preview(self, preview) -> None:
        if not isinstance(preview, dict) or preview.get("loss") is None:
            return
        self.losses.append((int(preview["step"]), float(preview["loss"])))
        if self._canvas is not None:
            steps, losses = zip(*self.losses)
            self._axes.clear()
            self._axes.semilogy(steps, losses)
            self._axes.set_xlabel("step")
            self._axes.set_ylabel("training loss (MSE)")
            self._canvas.draw_idle()

    def on_result(self, result) -> None:
        from napari.utils.notifications import show_info

        path = result.get("path") if isinstance(result, dict) else None
        self.status.setText(f"Done: {result.get('step')} steps, saved {path}" if path else "Done.")
        if path:
            show_info(f"{self.title}: weights saved to {path}; load them in the Denoise widget (weights file)")
