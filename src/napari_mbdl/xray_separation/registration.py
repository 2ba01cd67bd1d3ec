"""Check that a photograph is registered to the X-ray, and align it (numpy/scipy/scikit-image only).

Photographs and radiographs have different contrast, so both are compared through their gradient
magnitude, which both modalities share at paint boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine import InputError

_WORK_SIZE = 512  # registration runs on images subsampled to at most this many pixels a side


@dataclass(frozen=True)
class Alignment:
    """How a photograph relates to the X-ray.

    Attributes
    ----------
    shift : tuple of float
        (row, column) shift in X-ray pixels that moves the photograph onto the X-ray.
    mirrored : bool
        Whether the photograph had to be mirrored left-right (a back side photographed from behind).
    scale : tuple of float
        (row, column) zoom applied to bring the photograph to the X-ray's size.
    score : float
        Normalised correlation of the gradient magnitudes after alignment (1 = perfect).
    """

    shift: tuple[float, float]
    mirrored: bool
    scale: tuple[float, float]
    score: float

    @property
    def is_identity(self) -> bool:
        return not self.mirrored and max(abs(s) for s in self.shift) <= 1.0 and self.scale == (1.0, 1.0)


def _grey(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb.mean(axis=-1) if rgb.ndim == 3 else rgb


def _edges(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, sobel

    image = gaussian_filter(image.astype(np.float32), 1.0)
    magnitude = np.hypot(sobel(image, 0), sobel(image, 1))
    magnitude -= magnitude.mean()
    return magnitude / max(float(magnitude.std()), 1e-12)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).mean())


def _register(reference: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
    from scipy.ndimage import shift as shift_image
    from skimage.registration import phase_cross_correlation

    shift, _error, _phase = phase_cross_correlation(reference, moving, upsample_factor=4, normalization=None)
    moved = shift_image(moving, shift, order=1, mode="nearest")
    return np.asarray(shift, dtype=float), _correlation(reference, moved)


def estimate_alignment(rgb, xray, allow_mirror: bool = True) -> Alignment:
    """Estimate the zoom, mirror and shift that register ``rgb`` to ``xray``.

    Parameters
    ----------
    rgb : array-like, shape (h, w, 3) or (h, w)
        The photograph (any size: it is assumed to cover the same field of view).
    xray : array-like, shape (H, W)
        The mixed X-ray.
    allow_mirror : bool
        Also try the photograph mirrored left-right.

    Returns
    -------
    Alignment
    """
    from skimage.transform import resize

    xray_shape = tuple(xray.shape[:2])
    rgb_shape = tuple(rgb.shape[:2])
    scale = (xray_shape[0] / rgb_shape[0], xray_shape[1] / rgb_shape[1])
    # work on subsampled copies: registration of a large radiograph needs no full resolution
    factor = max(1, int(np.ceil(max(xray_shape) / _WORK_SIZE)))
    work_shape = (int(np.ceil(xray_shape[0] / factor)), int(np.ceil(xray_shape[1] / factor)))
    x_small = np.asarray(xray[::factor, ::factor], dtype=np.float32)[: work_shape[0], : work_shape[1]]
    step = max(1, int(min(rgb_shape[0] / work_shape[0], rgb_shape[1] / work_shape[1])))
    g_small = resize(_grey(np.asarray(rgb[::step, ::step])), work_shape, anti_aliasing=True)
    reference = _edges(x_small)
    best = None
    for mirrored in (False, True) if allow_mirror else (False,):
        moving = _edges(g_small[:, ::-1] if mirrored else g_small)
        shift, score = _register(reference, moving)
        if best is None or score > best[2] + 0.02:  # prefer not mirroring unless clearly better
            best = (shift, mirrored, score)
    shift, mirrored, score = best
    if np.abs(shift).max() < 0.5:  # below the precision of a cross-modal registration: keep the pixels as they are
        shift = np.zeros(2)
    return Alignment((float(shift[0] * factor), float(shift[1] * factor)), mirrored, scale, score)


def check_registration(rgb, xray, what: str = "side 1", tolerance: float = 2.0) -> Alignment:
    """Raise InputError when ``rgb`` is clearly not registered to ``xray``; return the estimate.

    A different size always fails (the message offers the alignment helper); a shift larger than
    ``tolerance`` pixels or a mirror is reported only when the aligned photograph matches the
    X-ray clearly better than as given.
    """
    if tuple(rgb.shape[:2]) != tuple(xray.shape[:2]):
        raise InputError(
            f"the photograph of {what} is {rgb.shape[0]}x{rgb.shape[1]} but the X-ray is "
            f"{xray.shape[0]}x{xray.shape[1]}; align it first (widget: 'Align photographs to the X-ray'; "
            "Python: napari_mbdl.xray_separation.align_to_xray)"
        )
    alignment = estimate_alignment(rgb, xray)
    if alignment.is_identity:
        return alignment
    factor = max(1, int(np.ceil(max(xray.shape[:2]) / _WORK_SIZE)))
    reference = _edges(np.asarray(xray[::factor, ::factor], dtype=np.float32))
    as_given = _correlation(reference, _edges(_grey(np.asarray(rgb[::factor, ::factor]))))
    if alignment.score > as_given + 0.05 and (max(abs(s) for s in alignment.shift) > tolerance or alignment.mirrored):
        mirror = "mirrored and " if alignment.mirrored else ""
        raise InputError(
            f"the photograph of {what} does not line up with the X-ray (it matches best {mirror}shifted by "
            f"{alignment.shift[0]:.1f}, {alignment.shift[1]:.1f} pixels); align it first (widget: "
            "'Align photographs to the X-ray'; Python: napari_mbdl.xray_separation.align_to_xray) "
            "or turn the registration check off"
        )
    return alignment


def align_to_xray(rgb, xray, allow_mirror: bool = True) -> tuple[np.ndarray, Alignment]:
    """Return a copy of ``rgb`` resized, mirrored and shifted onto the X-ray's pixel grid.

    Parameters
    ----------
    rgb : array-like, shape (h, w, 3)
        The photograph; it is not modified.
    xray : array-like, shape (H, W)
        The X-ray it should match.
    allow_mirror : bool
        Also consider the photograph mirrored left-right.

    Returns
    -------
    aligned : ndarray, shape (H, W, 3), float32
    alignment : Alignment
    """
    from scipy.ndimage import shift as shift_image
    from skimage.transform import resize

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise InputError(f"a photograph must be RGB with shape (H, W, 3); got {rgb.shape}")
    alignment = estimate_alignment(rgb, xray, allow_mirror)
    image = rgb[..., :3].astype(np.float32)
    if tuple(image.shape[:2]) != tuple(xray.shape[:2]):
        image = resize(image, (*xray.shape[:2], 3), anti_aliasing=True, preserve_range=True).astype(np.float32)
    if alignment.mirrored:
        image = image[:, ::-1]
    aligned = np.stack(
        [shift_image(image[..., c], alignment.shift, order=1, mode="nearest") for c in range(3)], axis=-1
    )
    return aligned.astype(np.float32), alignment
