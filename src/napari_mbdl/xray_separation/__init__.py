"""X-ray separation of double-sided paintings (and paintings with concealed designs).

An unfolded network of the slides' sparsity model (shared convolutional dictionary, RGB side
information sharing the sparse codes, exclusion between the sides' edges), trained
self-supervised on the painting itself; full-image inference through the streaming engine.

Only numpy-level names are imported here; torch is imported when a separation runs.
"""

from napari_mbdl.xray_separation.registration import Alignment, align_to_xray, check_registration, estimate_alignment
from napari_mbdl.xray_separation.synthetic import DoubleSidedPanel, make_double_sided_panel


def separate_xray(*args, **kwargs):
    """See :func:`napari_mbdl.xray_separation.api.separate_xray`."""
    from napari_mbdl.xray_separation.api import separate_xray as _separate

    return _separate(*args, **kwargs)


__all__ = [
    "Alignment",
    "DoubleSidedPanel",
    "align_to_xray",
    "check_registration",
    "estimate_alignment",
    "make_double_sided_panel",
    "separate_xray",
]
