"""Dock widget "LFM reconstruction": light field(s) -> 3D / 4D volume layer, with optional lenslet calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_mbdl._widgets._base import JobWidget, require_layer, result_store
from napari_mbdl.engine.errors import InputError


class LFMWidget(JobWidget):
    """Reconstruct volumes from a light-field layer (one frame or a time series, streamed frame by frame)."""

    title = "LFM reconstruction"
    run_text = "Reconstruct"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        import napari

        from napari_mbdl.lfm.optics import LFOptics

        defaults = LFOptics()
        self.grid = None
        self.light_field = create_widget(annotation=napari.layers.Image, label="light field")
        self.psf_source = ComboBox(label="PSF from", choices=["optics below", "PSF file"], value="optics below")
        # plain text fields for paths: an empty field must mean "none", never the current folder
        self.psf_file = LineEdit(label="PSF file (.zarr)", value="")
        self.magnification = FloatSpinBox(label="magnification", value=defaults.magnification, min=1, max=200)
        self.na = FloatSpinBox(label="NA", value=defaults.na, min=0.05, max=1.7, step=0.05)
        self.n = FloatSpinBox(label="immersion index n", value=defaults.n, min=1.0, max=1.8, step=0.01)
        self.wavelength = FloatSpinBox(label="wavelength (um)", value=defaults.wavelength_um, min=0.2, max=2.0,
                                       step=0.005)
        self.pitch = FloatSpinBox(label="lenslet pitch (um)", value=defaults.lenslet_pitch_um, min=1, max=2000)
        self.focal = FloatSpinBox(label="lenslet focal length (um)", value=defaults.mla_focal_um, min=1, max=100000)
        self.pixel = FloatSpinBox(label="pixel size (um)", value=defaults.pixel_size_um, min=0.1, max=100)
        self.n_pixels = SpinBox(label="pixels per lenslet", value=defaults.pixels_per_lenslet, min=1, max=63, step=2)
        self.n_voxels = SpinBox(label="voxels per lenslet", value=defaults.voxels_per_lenslet, min=1, max=63, step=2)
        self.depths = LineEdit(label="depths (um) start:stop:step", value="-30:30:7.5")
        self.psf_lenslets = SpinBox(label="PSF extent (lenslets)", value=defaults.psf_lenslets, min=1, max=41,
                                    step=2)
        self.white = create_widget(annotation=napari.layers.Image, label="white image", options={"nullable": True})
        self.calibrate_button = PushButton(text="Calibrate lenslet grid")
        self.rectify = CheckBox(text="rectify frames with the calibrated grid", value=False)
        self.method = ComboBox(label="method", choices=["unfolded", "rl", "isra"], value="unfolded")
        self.iterations = SpinBox(label="RL / ISRA iterations", value=30, min=1, max=1000)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.output = LineEdit(label="save to .zarr (optional)", value="")
        self.optics_box = Container(widgets=[self.magnification, self.na, self.n, self.wavelength, self.pitch,
                                             self.focal, self.pixel, self.n_pixels, self.n_voxels, self.depths,
                                             self.psf_lenslets], labels=True)
        self.form.extend([self.light_field, self.psf_source, self.psf_file, self.optics_box, self.white,
                          self.calibrate_button, self.rectify, self.method, self.iterations, self.device, self.output])
        self.calibrate_button.changed.connect(self.calibrate)
        self.psf_source.changed.connect(self._update_visibility)
        self.method.changed.connect(self._update_visibility)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._update_visibility()

    # -- form helpers -----------------------------------------------------------------------------------
    def _refresh_choices(self, event=None) -> None:
        for widget in (self.light_field, self.white):
            widget.reset_choices()

    def _update_visibility(self, event=None) -> None:
        from_file = self.psf_source.value == "PSF file"
        self.psf_file.visible = from_file
        self.optics_box.visible = not from_file
        self.iterations.visible = self.method.value != "unfolded"

    def optics(self):
        """The optics panel as :class:`LFOptics` (raises InputError on impossible values)."""
        from napari_mbdl.lfm.optics import LFOptics, parse_depths

        return LFOptics(
            magnification=float(self.magnification.value), na=float(self.na.value), n=float(self.n.value),
            wavelength_um=float(self.wavelength.value), lenslet_pitch_um=float(self.pitch.value),
            mla_focal_um=float(self.focal.value), pixel_size_um=float(self.pixel.value),
            pixels_per_lenslet=int(self.n_pixels.value), voxels_per_lenslet=int(self.n_voxels.value),
            depths_um=parse_depths(self.depths.value), psf_lenslets=int(self.psf_lenslets.value),
        )

    # -- calibration ----------------------------------------------------------------------------------
    def calibrate(self, event=None):
        """Fit the lenslet grid to the white image and draw the lenslet centres as a points layer."""
        from napari.utils.notifications import show_error

        from napari_mbdl.lfm.calibration import calibrate_lenslet_grid

        try:
            layer = require_layer(self.white.value, "white image")
            white = np.asarray(layer.data, dtype=np.float64)
            if white.ndim == 3:
                white = white.mean(axis=0)
            self.grid = calibrate_lenslet_grid(white)
        except Exception as error:
            self.grid = None
            message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
            self.status.setText(message)
            show_error(f"{self.title}: {message}")
            return None
        centres = self.grid.centers(white.shape)
        name = "lenslet grid"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_points(centres, name=name, size=max(2.0, self.grid.pitch_px / 4), face_color="transparent",
                               border_color="cyan", scale=tuple(layer.scale[-2:]),
                               translate=tuple(layer.translate[-2:]))
        self.rectify.value = True
        self.status.setText(f"grid: pitch {self.grid.pitch_px:.3f} px, rotation {self.grid.rotation_deg:.3f} deg, "
                            f"{len(centres)} lenslets")
        return self.grid

    # -- running ----------------------------------------------------------------------------------------
    def build_steps(self, cancel):
        from napari_mbdl.lfm.api import check_output_path
        from napari_mbdl.lfm.optics import LFOptics

        layer = require_layer(self.light_field.value, "light field")
        if layer.rgb:
            raise InputError("the light field must be a grey-level image, not RGB")
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        if data.ndim not in (2, 3):
            raise InputError(f"the light field must be (H, W) or a time series (T, H, W), got shape {data.shape}")
        if self.psf_source.value == "PSF file":
            text = self.psf_file.value.strip()
            if not text:
                raise InputError("choose a PSF file (made with mbdl lfm-psf), or compute it from the optics")
            psf_path, optics = Path(text), None
        else:
            psf_path, optics = None, self.optics()
        recorded = layer.metadata.get("lfm_optics") if isinstance(layer.metadata, dict) else None
        if optics is not None and recorded is not None:
            try:
                same = LFOptics.from_dict(recorded) == optics
            except InputError:
                same = False
            if not same:
                raise InputError("the light-field layer records other optics than the optics panel; "
                                 "fix the panel or load the matching PSF")
        grid = self.grid if self.rectify.value else None
        if self.rectify.value and grid is None:
            raise InputError("calibrate the lenslet grid first (white image), or untick 'rectify'")
        out = check_output_path(self.output.value)
        method, n_iter, device = self.method.value, int(self.iterations.value), self.device.value
        return self._steps(data, psf_path, optics, grid, method, n_iter, device, out, cancel, layer.name)

    def _steps(self, data, psf_path, optics, grid, method, n_iter, device, out, cancel, name):
        from napari_mbdl.lfm.api import lfm_reconstruct_steps
        from napari_mbdl.lfm.optics import LFPsf, cached_psf_steps, default_cache_dir

        if psf_path is not None:
            psf = LFPsf.load(psf_path)
        else:
            psf = yield from cached_psf_steps(optics, default_cache_dir())
        if out is None:  # a long series streams to a cache zarr and is shown lazily, never held in RAM
            o = psf.optics
            frames = data.shape[0] if data.ndim == 3 else 1
            volume_px = (data.shape[-2] // o.pixels_per_lenslet) * (data.shape[-1] // o.pixels_per_lenslet)
            expected = 4.0 * frames * o.n_depths * volume_px * o.voxels_per_lenslet**2
            out = result_store(f"{name} volume", expected)
        result = yield from lfm_reconstruct_steps(
            data, psf, method=method, n_iter=n_iter, grid=grid, out=out, overwrite=False, device=device,
            cancel=cancel)
        label = method if method == "unfolded" else f"{method} x{n_iter}"
        meta = {"name": f"{name} volume ({label})", "scale": tuple(result.scale), "colormap": "magma",
                "blending": "additive", "metadata": {"lfm_optics": psf.optics.to_dict(), "lfm_method": method}}
        return [(result.array, meta, "image")]

    def on_result(self, layer_data: list) -> None:
        self.add_layers(layer_data)
        self.viewer.dims.ndisplay = 3  # volumes are meant to be looked at in 3D
