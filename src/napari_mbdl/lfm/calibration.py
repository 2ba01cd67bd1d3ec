"""Lenslet-grid calibration from a white (uniformly lit) light field, and rectification onto the grid.

A white image is a square lattice of bright lenslet images.  Its Fourier transform peaks at the two lattice
frequencies ``g1 = (sin t, cos t) / p`` and ``g2 = (cos t, -sin t) / p`` in (y, x) (pitch ``p`` pixels, rotation
``t``): the strongest non-DC peak gives a start, a direct (non-gridded) DFT refines ``p`` and ``t`` to sub-pixel
precision by maximising ``|F(g1)|^2 + |F(g2)|^2``, and the phases of ``F(g1), F(g2)`` locate the lattice
(a lenslet centre).  Rectification resamples a raw frame so that every lenslet covers exactly ``N x N`` pixels,
axis-aligned, with its centre on the middle pixel.

numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_mbdl.engine.errors import InputError


@dataclass(frozen=True)
class LensletGrid:
    """Lenslet lattice on the raw camera image, in pixels.

    Attributes
    ----------
    center_yx : (float, float)
        A lenslet centre (the one nearest the image centre), (row, column).
    pitch_px : float
        Lenslet pitch in camera pixels.
    rotation_deg : float
        Angle of the lenslet rows against the image x axis.
    image_shape : (int, int)
        Shape of the image the grid was fitted on.
    """

    center_yx: tuple
    pitch_px: float
    rotation_deg: float
    image_shape: tuple

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit lattice vectors ``(e_row, e_col)`` in (y, x) pixel coordinates."""
        t = np.deg2rad(self.rotation_deg)
        e_col = np.array([np.sin(t), np.cos(t)])  # moving along a lenslet row: mostly +x
        e_row = np.array([np.cos(t), -np.sin(t)])  # moving down a lenslet column: mostly +y
        return e_row, e_col

    def lenslet_range(self, shape=None) -> tuple[range, range]:
        """Lenslet indices (relative to the centre lenslet) of the largest full rectangle inside the image."""
        shape = tuple(shape or self.image_shape)
        e_row, e_col = self.axes()
        c = np.asarray(self.center_yx, dtype=float)
        half = self.pitch_px / 2
        reach = int(np.ceil(max(shape) / self.pitch_px)) + 2
        idx = np.arange(-reach, reach + 1)
        A, B = np.meshgrid(idx, idx, indexing="ij")
        ok = np.ones(A.shape, bool)
        for da in (-half, half):
            for db in (-half, half):
                y = c[0] + (A * self.pitch_px + da) * e_row[0] + (B * self.pitch_px + db) * e_col[0]
                x = c[1] + (A * self.pitch_px + da) * e_row[1] + (B * self.pitch_px + db) * e_col[1]
                ok &= (y >= -0.5) & (y <= shape[0] - 0.5) & (x >= -0.5) & (x <= shape[1] - 0.5)
        rows = idx[ok.any(axis=1)]
        cols = idx[ok.any(axis=0)]
        if rows.size == 0 or cols.size == 0:
            raise InputError("no whole lenslet fits in the image with this lenslet grid")
        a0, a1, b0, b1 = rows.min(), rows.max(), cols.min(), cols.max()
        while True:
            sub = ok[a0 + reach:a1 + reach + 1, b0 + reach:b1 + reach + 1]
            if sub.all():
                break
            bad_rows = (~sub).sum(axis=1)
            bad_cols = (~sub).sum(axis=0)
            # trim the edge with the most missing lenslets
            edges = {"a0": bad_rows[0], "a1": bad_rows[-1], "b0": bad_cols[0], "b1": bad_cols[-1]}
            edge = max(edges, key=edges.get)
            if edge == "a0":
                a0 += 1
            elif edge == "a1":
                a1 -= 1
            elif edge == "b0":
                b0 += 1
            else:
                b1 -= 1
            if a0 > a1 or b0 > b1:
                raise InputError("no whole lenslet fits in the image with this lenslet grid")
        return range(int(a0), int(a1) + 1), range(int(b0), int(b1) + 1)

    def centers(self, shape=None) -> np.ndarray:
        """(n, 2) lenslet centres (row, column) of the lenslets that rectification keeps."""
        rows, cols = self.lenslet_range(shape)
        e_row, e_col = self.axes()
        A, B = np.meshgrid(np.asarray(rows), np.asarray(cols), indexing="ij")
        return np.asarray(self.center_yx)[None] + self.pitch_px * (A.reshape(-1, 1) * e_row + B.reshape(-1, 1) * e_col)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> LensletGrid:
        try:
            return cls(center_yx=tuple(float(v) for v in values["center_yx"]), pitch_px=float(values["pitch_px"]),
                       rotation_deg=float(values["rotation_deg"]),
                       image_shape=tuple(int(v) for v in values["image_shape"]))
        except (KeyError, TypeError, ValueError):
            raise InputError("lenslet grid needs center_yx, pitch_px, rotation_deg and image_shape") from None


def _dft_at(image: np.ndarray, yy: np.ndarray, xx: np.ndarray, g: np.ndarray) -> complex:
    # the plane wave is separable, so the 2-D sum is two matrix-vector products
    row_wave = np.exp(-2j * np.pi * g[0] * yy.reshape(-1))
    col_wave = np.exp(-2j * np.pi * g[1] * xx.reshape(-1))
    return complex(row_wave @ image @ col_wave)


def calibrate_lenslet_grid(white: np.ndarray, pitch_hint: float | None = None) -> LensletGrid:
    """Fit the lenslet lattice (centre, pitch, rotation) to a white image.

    Parameters
    ----------
    white : ndarray (H, W)
        Image of a uniformly lit sample (or the mean of many light fields).
    pitch_hint : float, optional
        Approximate pitch in pixels; restricts the Fourier peak search to 0.8..1.25 of it.

    Returns
    -------
    LensletGrid
    """
    img = np.asarray(white, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"white image must be 2-D (H, W), got shape {img.shape}")
    if min(img.shape) < 16:
        raise InputError(f"white image of {img.shape} pixels is too small to calibrate a lenslet grid")
    if not np.all(np.isfinite(img)):
        raise InputError("white image contains NaN or infinite values")
    if float(img.std()) == 0.0:
        raise InputError("white image is constant: no lenslet pattern to calibrate on")
    Hh, Ww = img.shape
    window = np.hanning(Hh)[:, None] * np.hanning(Ww)[None, :]
    work = (img - img.mean()) * window
    spectrum = np.abs(np.fft.fft2(work)) ** 2
    fy = np.fft.fftfreq(Hh)[:, None]
    fx = np.fft.fftfreq(Ww)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    if pitch_hint is not None:
        if not np.isfinite(pitch_hint) or pitch_hint <= 2:
            raise InputError(f"pitch hint must be a number of pixels > 2, got {pitch_hint!r}")
        allowed = (radius > 0.8 / pitch_hint) & (radius < 1.25 / pitch_hint)
    else:
        allowed = (radius > 4.0 / min(Hh, Ww)) & (radius < 0.4)
    # one half-plane: fx > 0 (or fx == 0, fy > 0) so a peak and its mirror are not both candidates
    allowed &= (fx > 0) | ((fx == 0) & (fy > 0))
    masked = np.where(allowed, spectrum, 0.0)
    peak = np.unravel_index(int(np.argmax(masked)), masked.shape)
    g = np.array([fy[peak[0], 0], fx[0, peak[1]]])
    pitch0 = 1.0 / np.hypot(*g)
    # angle of the lattice frequency, folded to (-45, 45] degrees: a square lattice looks the same every 90 degrees
    theta0 = np.arctan2(g[0], g[1])
    theta0 = (theta0 + np.pi / 4) % (np.pi / 2) - np.pi / 4
    yy = np.arange(Hh)[:, None] - (Hh - 1) / 2
    xx = np.arange(Ww)[None, :] - (Ww - 1) / 2

    def lattice_freqs(p, t):
        return np.array([np.sin(t), np.cos(t)]) / p, np.array([np.cos(t), -np.sin(t)]) / p

    def objective(params):
        g1, g2 = lattice_freqs(*params)
        return -(abs(_dft_at(work, yy, xx, g1)) ** 2 + abs(_dft_at(work, yy, xx, g2)) ** 2)

    from scipy.optimize import minimize

    best = minimize(objective, x0=[pitch0, theta0], method="Nelder-Mead",
                    options={"xatol": 1e-5, "fatol": 1e-10, "maxiter": 400,
                             "initial_simplex": [[pitch0, theta0], [pitch0 * 1.01, theta0], [pitch0, theta0 + 0.01]]})
    pitch, theta = float(best.x[0]), float(best.x[1])
    # a symmetric window keeps the lattice phase: F(g) ~ exp(-2 pi i g.c) for lenslets centred at c + lattice
    g1, g2 = lattice_freqs(pitch, theta)
    phases = np.array([np.angle(_dft_at(work, yy, xx, g1)), np.angle(_dft_at(work, yy, xx, g2))])
    offset = np.linalg.solve(np.stack([g1, g2]), -phases / (2 * np.pi))
    center = offset + np.array([(Hh - 1) / 2, (Ww - 1) / 2])
    return LensletGrid(center_yx=(float(center[0]), float(center[1])), pitch_px=pitch,
                       rotation_deg=float(np.rad2deg(theta)), image_shape=(Hh, Ww))


def rectify(frame: np.ndarray, grid: LensletGrid, pixels_per_lenslet: int, order: int = 1) -> np.ndarray:
    """Resample a raw frame (or a stack ``(..., H, W)``) onto the lenslet grid: ``N x N`` pixels per lenslet.

    Returns
    -------
    ndarray (..., La*N, Lb*N), float32
        The lenslets that lie wholly inside the frame, axis-aligned.
    """
    frame = np.asarray(frame)
    if frame.ndim < 2:
        raise InputError(f"expected an image (H, W) or a stack of them, got shape {frame.shape}")
    if tuple(frame.shape[-2:]) != tuple(grid.image_shape):
        raise InputError(f"frame of {frame.shape[-2:]} pixels does not match the calibration image {grid.image_shape}")
    from scipy.ndimage import map_coordinates

    N = int(pixels_per_lenslet)
    rows, cols = grid.lenslet_range(frame.shape[-2:])
    e_row, e_col = grid.axes()
    sub = (np.arange(N) - (N - 1) / 2) / N
    a = (np.asarray(rows)[:, None] + sub[None, :]).reshape(-1)  # lenslet units along the rows axis
    b = (np.asarray(cols)[:, None] + sub[None, :]).reshape(-1)
    A, B = np.meshgrid(a, b, indexing="ij")
    y = grid.center_yx[0] + grid.pitch_px * (A * e_row[0] + B * e_col[0])
    x = grid.center_yx[1] + grid.pitch_px * (A * e_row[1] + B * e_col[1])
    flat = frame.reshape(-1, *frame.shape[-2:]).astype(np.float32)
    out = np.stack([map_coordinates(f, [y, x], order=order, mode="nearest") for f in flat])
    return out.reshape(*frame.shape[:-2], *y.shape)


def simulate_white_image(shape=(240, 240), pitch_px: float = 15.0, rotation_deg: float = 0.0,
                         center_yx=None, fill: float = 0.45, blur: float = 0.8) -> np.ndarray:
    """A synthetic white light field: a lattice of soft-edged discs (tests, sample data)."""
    Hh, Ww = shape
    center = np.array(center_yx if center_yx is not None else ((Hh - 1) / 2, (Ww - 1) / 2), dtype=float)
    grid = LensletGrid(tuple(center), float(pitch_px), float(rotation_deg), tuple(shape))
    e_row, e_col = grid.axes()
    yy, xx = np.mgrid[0:Hh, 0:Ww].astype(float)
    d = np.stack([yy - center[0], xx - center[1]], axis=-1)
    u = d @ e_row / pitch_px
    v = d @ e_col / pitch_px
    r = np.hypot(u - np.round(u), v - np.round(v))  # distance to the nearest lenslet centre (lenslet units)
    edge = blur / pitch_px
    return (0.5 * (1 - np.tanh((r - fill) / edge))).astype(np.float32)
