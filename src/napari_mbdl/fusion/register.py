"""Registration of the two-photon stack to the LFM volume space, and footprints mapped there.

The scale between the two grids comes from the optics of both microscopes (their voxel sizes);
what remains is a rigid motion (rotation about the optical axis and a 3D shift), fitted by
maximising the normalised cross-correlation between the 2P stack resampled onto the LFM grid
and an LFM reconstruction of the mean light field.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.fusion.simulate import rotation_about_z, voxel_transform


@dataclass
class Registration:
    """A fitted map from 2P voxel indices to LFM voxel indices.

    Attributes
    ----------
    matrix : ndarray, shape (4, 4)
        Homogeneous voxel-index map ``[i_lfm, 1] = matrix @ [i_2p, 1]``.
    rotation_deg : float
        Rotation about the optical axis (2P frame -> LFM frame).
    shift_um : tuple of float
        Shift ``(z, y, x)`` in micrometres (2P frame centre -> LFM frame).
    correlation : float
        Normalised cross-correlation of the resampled 2P stack with the LFM reconstruction.
    overlap : float
        Fraction of the LFM volume covered by the 2P stack.
    two_photon_shape, volume_shape : tuple of int
    two_photon_voxel_um, lfm_voxel_um : tuple of float
    """

    matrix: np.ndarray
    rotation_deg: float
    shift_um: tuple[float, float, float]
    correlation: float
    overlap: float
    two_photon_shape: tuple[int, int, int]
    volume_shape: tuple[int, int, int]
    two_photon_voxel_um: tuple[float, float, float]
    lfm_voxel_um: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {
            "matrix": np.asarray(self.matrix).tolist(),
            "rotation_deg": float(self.rotation_deg),
            "shift_um": [float(v) for v in self.shift_um],
            "correlation": float(self.correlation),
            "overlap": float(self.overlap),
            "two_photon_shape": list(self.two_photon_shape),
            "volume_shape": list(self.volume_shape),
            "two_photon_voxel_um": list(self.two_photon_voxel_um),
            "lfm_voxel_um": list(self.lfm_voxel_um),
        }

    def describe(self) -> str:
        z, y, x = self.shift_um
        return (
            f"rotation {self.rotation_deg:+.2f} deg, shift (z, y, x) = ({z:+.2f}, {y:+.2f}, {x:+.2f}) um, "
            f"correlation {self.correlation:.3f}, overlap {100 * self.overlap:.0f}%"
        )

    @classmethod
    def from_parameters(cls, rotation_deg, shift_um, two_photon_shape, two_photon_voxel_um, volume_shape, lfm_voxel_um,
                        correlation=float("nan"), overlap=float("nan")) -> Registration:
        matrix = voxel_transform(rotation_about_z(rotation_deg), shift_um, two_photon_shape, two_photon_voxel_um,
                                 volume_shape, lfm_voxel_um)
        return cls(matrix, float(rotation_deg), tuple(float(v) for v in shift_um), float(correlation), float(overlap),
                   tuple(int(s) for s in two_photon_shape), tuple(int(s) for s in volume_shape),
                   tuple(float(v) for v in two_photon_voxel_um), tuple(float(v) for v in lfm_voxel_um))


def resample_to_lfm(stack: np.ndarray, matrix: np.ndarray, volume_shape, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample a 2P-grid array onto the LFM grid through ``matrix`` (2P index -> LFM index)."""
    from scipy import ndimage

    inverse = np.linalg.inv(matrix)
    return ndimage.affine_transform(
        np.asarray(stack, np.float32), inverse[:3, :3], offset=inverse[:3, 3], output_shape=tuple(volume_shape),
        order=order, cval=cval, mode="constant",
    )


def _prefilter(stack: np.ndarray, two_photon_voxel_um, lfm_voxel_um) -> np.ndarray:
    """Blur the 2P stack to the LFM sampling (anti-aliasing) before resampling."""
    from scipy import ndimage

    ratio = np.asarray(lfm_voxel_um, float) / np.asarray(two_photon_voxel_um, float)
    return ndimage.gaussian_filter(np.asarray(stack, np.float32), np.maximum(0.5 * ratio, 0.0))


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 8:
        return -1.0
    a = a[mask] - a[mask].mean()
    b = b[mask] - b[mask].mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else -1.0


def register_stack(
    two_photon,
    two_photon_voxel_um,
    lfm_volume,
    lfm_voxel_um,
    max_rotation_deg: float = 10.0,
    rotation_step_deg: float = 2.0,
    min_overlap: float = 0.25,
) -> Registration:
    """Fit the rigid motion that maps the 2P stack onto an LFM volume.

    A coarse search over rotations (each with the best shift from phase correlation) is
    refined by maximising the normalised cross-correlation over (rotation, shift) with Powell's
    method.

    Parameters
    ----------
    two_photon : array_like, shape (z, y, x)
        Structural 2P stack.
    two_photon_voxel_um, lfm_voxel_um : tuple of float
        Voxel sizes of both grids (from the optics).
    lfm_volume : array_like, shape (Z, Y, X)
        LFM reconstruction, e.g. of the mean light field.
    max_rotation_deg, rotation_step_deg : float
        Range and step of the coarse rotation search.
    min_overlap : float
        Fail when less than this fraction of the LFM volume is covered by the 2P stack.

    Returns
    -------
    Registration

    Raises
    ------
    InputError
        For non-3D inputs, NaNs, or when the registered stacks do not overlap.
    """
    from scipy import optimize
    from skimage.registration import phase_cross_correlation

    two_photon = np.asarray(two_photon, np.float32)
    lfm_volume = np.asarray(lfm_volume, np.float32)
    if two_photon.ndim != 3 or lfm_volume.ndim != 3:
        raise InputError(
            f"registration needs 3D (z, y, x) volumes; got a {two_photon.ndim}D 2P stack and a {lfm_volume.ndim}D LFM volume"
        )
    if not (np.all(np.isfinite(two_photon)) and np.all(np.isfinite(lfm_volume))):
        raise InputError("registration inputs hold NaN or infinite values")
    tp_voxel = tuple(float(v) for v in two_photon_voxel_um)
    lf_voxel = tuple(float(v) for v in lfm_voxel_um)
    volume_shape = lfm_volume.shape
    moving = _prefilter(two_photon, tp_voxel, lf_voxel)
    ones = np.ones(two_photon.shape, np.float32)

    def resampled(params):
        reg = Registration.from_parameters(params[0], params[1:], two_photon.shape, tp_voxel, volume_shape, lf_voxel)
        return resample_to_lfm(moving, reg.matrix, volume_shape), resample_to_lfm(ones, reg.matrix, volume_shape, order=0) > 0.5

    def score(params):
        image, mask = resampled(params)
        return _ncc(image, lfm_volume, mask)

    best = None
    lf_voxel_arr = np.asarray(lf_voxel)
    for angle in np.arange(-max_rotation_deg, max_rotation_deg + 1e-9, rotation_step_deg):
        image, _ = resampled([angle, 0.0, 0.0, 0.0])
        with warnings.catch_warnings():
            # an angle that rotates the stack out of the volume gives an empty image: skimage warns,
            # and a registration without overlap is refused below with its own message
            warnings.filterwarnings("ignore", message="Could not determine RMS error", category=UserWarning)
            shift_vox, _, _ = phase_cross_correlation(lfm_volume, image, upsample_factor=4, normalization=None)
        params = np.array([angle, *(shift_vox * lf_voxel_arr)])
        value = score(params)
        if best is None or value > best[1]:
            best = (params, value)
    # Powell refinement, parameters scaled to about one voxel / one degree per unit.
    unit = np.array([1.0, *lf_voxel_arr])
    result = optimize.minimize(lambda u: -score(u * unit), best[0] / unit, method="Powell",
                               options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 400})
    params = result.x * unit if -result.fun >= best[1] else best[0]
    correlation = max(-float(result.fun), best[1])
    _, mask = resampled(params)
    overlap = float(mask.mean())
    if overlap < min_overlap:
        raise InputError(
            f"no overlap after registration: the 2P stack covers only {100 * overlap:.0f}% of the LFM volume "
            f"(need {100 * min_overlap:.0f}%); check the voxel sizes / optics of both microscopes"
        )
    return Registration.from_parameters(params[0], params[1:], two_photon.shape, tp_voxel, volume_shape, lf_voxel,
                                        correlation=correlation, overlap=overlap)


def map_labels_to_lfm(labels, registration: Registration, supersample: int = 3, min_fraction: float = 0.25):
    """Footprints of 2P labels on the LFM grid: the fraction of each LFM voxel each cell fills.

    Parameters
    ----------
    labels : array_like of int, shape = registration.two_photon_shape
        Cell labels in the 2P stack (0 = background).
    registration : Registration
        2P -> LFM map.
    supersample : int
        Sub-samples per LFM voxel per axis used to measure partial filling.
    min_fraction : float
        Cells that keep less than this fraction of their 2P volume inside the LFM volume are
        dropped (they are mostly outside the light-field field of view).

    Returns
    -------
    footprints : ndarray, shape (n, Z, Y, X), float32
        One (fractional) footprint per kept cell.
    label_ids : ndarray of int, shape (n,)
        The 2P label of each footprint.

    Raises
    ------
    InputError
        If no cell lands inside the LFM volume.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.shape != tuple(registration.two_photon_shape):
        raise InputError(f"labels shape {labels.shape} differs from the registered 2P stack {registration.two_photon_shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, not {labels.dtype}")
    volume_shape = tuple(registration.volume_shape)
    s = int(supersample)
    sub = (np.arange(s) - (s - 1) / 2.0) / s
    axes = [(np.arange(n)[:, None] + sub[None, :]).ravel() for n in volume_shape]
    fine = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    inverse = np.linalg.inv(registration.matrix)
    source = inverse[:3, :3] @ fine + inverse[:3, 3:4]
    sampled = ndimage.map_coordinates(labels, source, order=0, mode="constant", cval=0).astype(np.int64)
    coarse_index = np.ravel_multi_index(
        tuple(np.floor(fine[a] + 0.5).astype(np.int64).clip(0, volume_shape[a] - 1) for a in range(3)), volume_shape
    )
    inside = sampled > 0
    n_vox = int(np.prod(volume_shape))
    keys = sampled[inside] * n_vox + coarse_index[inside]
    unique, counts = np.unique(keys, return_counts=True)
    label_of, voxel_of = np.divmod(unique, n_vox)

    ids = np.unique(label_of)
    if len(ids) == 0:
        raise InputError("no cell of the 2P labels lands inside the LFM volume: the registration has no overlap")
    # Volume of each label in the 2P stack, in LFM voxel units, to judge what is inside.
    full = np.bincount(labels.ravel().astype(np.int64), minlength=int(labels.max()) + 1).astype(float)
    tp_to_lfm_volume = abs(np.linalg.det(registration.matrix[:3, :3]))
    footprints = []
    kept = []
    for label in ids:
        sel = label_of == label
        volume = np.zeros(n_vox, np.float32)
        volume[voxel_of[sel]] = counts[sel] / float(s**3)
        if volume.sum() < min_fraction * full[label] * tp_to_lfm_volume:
            continue
        footprints.append(volume.reshape(volume_shape))
        kept.append(int(label))
    if not kept:
        raise InputError("no cell of the 2P labels lies mostly inside the LFM volume: the registration has no overlap")
    return np.stack(footprints), np.asarray(kept, np.int64)


def footprints_to_labels(footprints: np.ndarray, label_ids: np.ndarray, min_fill: float = 0.3) -> np.ndarray:
    """Hard LFM-space labels: each voxel goes to the footprint that fills it most (if >= ``min_fill``)."""
    if len(footprints) == 0:
        raise InputError("no footprints to label")
    best = footprints.argmax(axis=0)
    value = footprints.max(axis=0)
    out = np.asarray(label_ids)[best].astype(np.int32)
    out[value < min_fill] = 0
    return out
