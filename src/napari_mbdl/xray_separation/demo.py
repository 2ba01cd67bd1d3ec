"""``mbdl demo``: separate the synthetic double-sided panel (a short training run, well under a minute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mbdl.engine import Progress


def run_demo(out_dir: Path, device: str = "auto"):
    """Steps generator: train briefly on the 128 x 128 sample panel, separate it into OME-Zarr.

    Returns napari LayerDataTuples: the mixed X-ray, the photograph of side 1, both separated sides
    and the re-synthesis error.
    """
    from napari_mbdl.xray_separation.api import separate_xray_steps
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel
    from napari_mbdl.xray_separation.training import SeparationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panel = make_double_sided_panel(128)
    config = SeparationConfig(iterations=40, preview_every=20)
    result = yield from separate_xray_steps(
        panel.mixed, panel.rgb1, config=config, device=device, out=out_dir / "separated.zarr", overwrite=True
    )
    stacked = np.asarray(result.stacked)
    yield Progress("xray demo", 1, 1, f"wrote {result.run.path}")
    return [
        (panel.mixed, {"name": "mixed X-ray", "colormap": "gray"}, "image"),
        (panel.rgb1, {"name": "photograph side 1", "rgb": True}, "image"),
        (stacked[0], {"name": "separated side 1", "colormap": "gray"}, "image"),
        (stacked[1], {"name": "separated side 2", "colormap": "gray"}, "image"),
        (np.abs(stacked[2]), {"name": "re-synthesis error", "colormap": "magma"}, "image"),
    ]
