"""``mbdl demo`` / ``make demo``: every capability on its built-in sample data.

Headless: runs each capability, writes its results (OME-Zarr / TIFF) and a screenshot of napari
showing the layers, and prints where they are.  With a display (``--gui``): opens napari with the
layers and every widget docked.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

# capability -> "module:function"; function(out_dir, device) is a steps generator returning layer data.
_DEMOS = {
    "engine": "napari_mbdl.engine.demo:run_demo",
    # --- denoise demo ---
    "denoise": "napari_mbdl.denoise.demo:run_demo",
    # --- lfm demo ---
    "lfm": "napari_mbdl.lfm.demo:run_demo",
    # --- fusion demo ---
    "fusion": "napari_mbdl.fusion.demo:run_demo",
    # --- xrf demo ---
    "xrf": "napari_mbdl.xrf.layers:run_demo",
    # --- xray demo ---
    "xray": "napari_mbdl.xray_separation.demo:run_demo",
}

log = logging.getLogger(__name__)


def available_demos() -> dict[str, str]:
    return dict(_DEMOS)


def run_demos(out_dir: Path, device: str = "auto", only: list[str] | None = None, quiet: bool = False):
    """Run the demos; return ``{capability: list of LayerDataTuple}`` and the failures."""
    from napari_mbdl.cli import run_steps_with_bar

    out_dir.mkdir(parents=True, exist_ok=True)
    layers, failures = {}, {}
    for name, target in _DEMOS.items():
        if only and name not in only:
            continue
        module_name, function_name = target.split(":")
        run_demo = getattr(importlib.import_module(module_name), function_name)
        print(f"[demo] {name} ...", file=sys.stderr)
        try:
            layers[name] = run_steps_with_bar(run_demo(out_dir / name, device), quiet=quiet)
        except Exception as error:  # one failing capability must not hide the others' results
            log.error("demo %s failed", name, exc_info=error)
            failures[name] = f"{type(error).__name__}: {error}"
    return layers, failures


def _add_all(viewer, layer_groups: dict) -> None:
    from napari.layers import Layer

    for name, group in layer_groups.items():
        for data, meta, layer_type in group:
            meta = dict(meta)
            meta["name"] = f"{name}: {meta.get('name', layer_type)}"
            viewer.add_layer(Layer.create(data, meta, layer_type))


def screenshot(layer_groups: dict, path: Path) -> Path:
    """Render every demo layer in a napari viewer (grid mode) and save a PNG of the window."""
    import napari
    from qtpy.QtWidgets import QApplication

    # shown on the (virtual) display: a hidden canvas has no size, so its camera cannot frame the layers
    viewer = napari.Viewer(show=True, title="napari-mbdl demo")
    try:
        _add_all(viewer, layer_groups)
        viewer.grid.enabled = True
        viewer.window.resize(1600, 1000)
        QApplication.processEvents()
        viewer.reset_view()
        QApplication.processEvents()
        viewer.screenshot(str(path), canvas_only=False, flash=False)
    finally:
        viewer.close()
    return path


def open_gui(layer_groups: dict) -> None:
    """Open napari with the demo layers and every napari-mbdl widget docked."""
    import napari
    from npe2 import PluginManager

    viewer = napari.Viewer(title="napari-mbdl demo")
    _add_all(viewer, layer_groups)
    manifest = PluginManager.instance().get_manifest("napari-mbdl")
    for widget in manifest.contributions.widgets or []:
        viewer.window.add_plugin_dock_widget("napari-mbdl", widget.display_name)
    napari.run()
