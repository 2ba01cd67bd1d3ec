"""napari sample data: a synthetic double-sided panel (no torch; built in well under a second)."""

from __future__ import annotations


def panel_layers(size: int = 128) -> list:
    """LayerDataTuples of the synthetic panel: mixed X-ray, both photographs, and the true sides.

    The true sides are included (hidden) so a separation can be compared with them.
    """
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel

    panel = make_double_sided_panel(size)
    return [
        (panel.rgb1, {"name": "xray: photograph side 1", "rgb": True}, "image"),
        (panel.rgb2, {"name": "xray: photograph side 2 (mirrored)", "rgb": True, "visible": False}, "image"),
        (panel.xray1, {"name": "xray: true X-ray side 1", "colormap": "gray", "visible": False}, "image"),
        (panel.xray2, {"name": "xray: true X-ray side 2", "colormap": "gray", "visible": False}, "image"),
        (panel.mixed, {"name": "xray: mixed X-ray", "colormap": "gray"}, "image"),
    ]


def napari_sample() -> list:
    """napari sample_data command: the 128 x 128 synthetic double-sided panel."""
    return panel_layers(128)
