"""A synthetic double-sided panel with known X-ray sides (for the sample data, tests and benchmark).

Two photographs that ship with scikit-image play the two painted sides; each side's X-ray is a
grey-level rendering of its paint (numpy/scikit-image only: no torch, no download).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DoubleSidedPanel:
    """A synthetic panel: the measured mixture, the RGB photographs and the true X-ray sides.

    Attributes
    ----------
    mixed : ndarray, shape (H, W), float32
        The measured X-ray: ``xray1 + xray2`` plus a little detector noise.
    rgb1, rgb2 : ndarray, shape (H, W, 3), float32 in [0, 1]
        Photographs of the front and of the back, both registered to the X-ray (the back one is
        mirrored, as it is seen through the panel).
    xray1, xray2 : ndarray, shape (H, W), float32
        The true X-ray images of each side (what a separation should recover).
    """

    mixed: np.ndarray
    rgb1: np.ndarray
    rgb2: np.ndarray
    xray1: np.ndarray
    xray2: np.ndarray


def render_xray(rgb: np.ndarray, blur_sigma: float = 1.0) -> np.ndarray:
    """Render an X-ray-like absorbance image of one painted side from its RGB photograph.

    X-ray absorbance of paint is dominated by heavy-element pigments: lead white in light passages
    and vermilion (mercury) in reds, so it is a *non-linear* function of colour, not a grey
    conversion.  The radiograph is also a little less sharp than the photograph.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3), float in [0, 1]
        The side's photograph.
    blur_sigma : float
        Gaussian blur (pixels) of the radiograph relative to the photograph.

    Returns
    -------
    ndarray, shape (H, W), float32 in [0, 0.5]; its darkest 1% is at 0.
    """
    from scipy.ndimage import gaussian_filter

    rgb = np.asarray(rgb, dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lightness = 0.3 * red + 0.55 * green + 0.15 * blue
    lead_white = lightness**1.8  # dense only where the paint is really light
    vermilion = np.clip(red - 0.5 * (green + blue), 0.0, 1.0)  # strong reds
    absorbance = 0.7 * lead_white + 0.3 * np.sqrt(vermilion)
    if blur_sigma > 0:
        absorbance = gaussian_filter(absorbance, blur_sigma)
    # A radiograph fixes each side only up to a constant (the support is shared); by the same
    # convention as the separation, each side's darkest 1% is at zero absorbance.
    absorbance = np.clip(absorbance - np.percentile(absorbance, 1.0), 0.0, None)
    return (0.5 * absorbance / max(float(absorbance.max()), 1e-6)).astype(np.float32)


def _square_rgb(image: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    return resize(crop, (size, size, 3), anti_aliasing=True).astype(np.float32)


#: Photographs (scikit-image data names) of the two sides.  The method's settings were tuned on
#: the first six panels (pairs of four photographs); "held-out" uses two other photographs and is
#: never used for tuning, to check that the settings generalise.
PANELS = {
    "default": ("astronaut", "coffee"),
    "chelsea-rocket": ("chelsea", "rocket"),
    "coffee-astronaut": ("coffee", "astronaut"),
    "rocket-chelsea": ("rocket", "chelsea"),
    "astronaut-rocket": ("astronaut", "rocket"),
    "chelsea-coffee": ("chelsea", "coffee"),
    "held-out": ("motorcycle", "immunohistochemistry"),
}


def _photograph(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":  # the left image of scikit-image's stereo pair
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def make_double_sided_panel(size: int = 256, noise: float = 0.003, seed: int = 0,
                            panel: str = "default") -> DoubleSidedPanel:
    """Build a synthetic double-sided panel from two scikit-image photographs.

    Side 1 (front) and side 2 (back) are ``PANELS[panel]`` (by default ``skimage.data.astronaut()``
    and ``skimage.data.coffee()``); both are centre-cropped to squares and resized to ``size`` x
    ``size``.  The back is mirrored left-right because the X-ray sees it through the panel.

    Parameters
    ----------
    size : int
        Height and width in pixels (at least 32).
    noise : float
        Standard deviation of the Gaussian detector noise added to the mixture.
    seed : int
        Seed of the noise.
    panel : str
        Which pair of photographs: a key of ``PANELS``.

    Returns
    -------
    DoubleSidedPanel
    """
    if size < 32:
        raise ValueError("size must be at least 32 pixels")
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {sorted(PANELS)}")
    front, back = (_photograph(name) for name in PANELS[panel])
    rgb1 = _square_rgb(front, size)
    rgb2 = _square_rgb(back, size)[:, ::-1].copy()
    xray1 = render_xray(rgb1)
    xray2 = render_xray(rgb2)
    rng = np.random.default_rng(seed)
    mixed = (xray1 + xray2 + noise * rng.standard_normal(xray1.shape)).astype(np.float32)
    return DoubleSidedPanel(mixed=mixed, rgb1=rgb1, rgb2=rgb2, xray1=xray1, xray2=xray2)
