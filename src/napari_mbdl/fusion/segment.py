"""Cell bodies from the two-photon structural stack: LoG detection + marker watershed."""

from __future__ import annotations

import numpy as np

from napari_mbdl.engine.errors import InputError


def _check_stack(stack) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise InputError(f"the two-photon stack must be 3D (z, y, x), not {stack.ndim}D with shape {stack.shape}")
    if min(stack.shape) < 2:
        raise InputError(f"the two-photon stack {stack.shape} is too thin to hold cells")
    if not np.issubdtype(stack.dtype, np.number) or np.issubdtype(stack.dtype, np.complexfloating):
        raise InputError(f"the two-photon stack must hold real numbers, not {stack.dtype}")
    stack = stack.astype(np.float32)
    if not np.all(np.isfinite(stack)):
        raise InputError("the two-photon stack holds NaN or infinite values")
    if float(stack.max() - stack.min()) <= 0:
        raise InputError("the two-photon stack is constant: there are no cells to find")
    return stack


def segment_neurons(
    stack,
    voxel_um=(1.0, 1.0, 1.0),
    cell_radius_um=(5.0, 5.0, 5.0),
    threshold: float = 0.25,
    min_volume_fraction: float = 0.2,
) -> np.ndarray:
    """Label the cell bodies of a two-photon stack.

    Cells are found as maxima of the scale-normalised Laplacian-of-Gaussian matched to the
    expected cell size (curved down along every axis, well above the noise of the response),
    then grown by a marker-controlled watershed of the smoothed stack inside its foreground
    (Otsu threshold).

    Parameters
    ----------
    stack : array_like, shape (z, y, x)
        Structural 2P stack.
    voxel_um : tuple of float
        Voxel size ``(dz, dy, dx)`` in micrometres.
    cell_radius_um : tuple of float
        Expected cell semi-axes ``(rz, ry, rx)`` in micrometres.
    threshold : float
        Minimum LoG response of a cell centre, as a fraction of the 95th percentile of all
        candidate responses (lower finds dimmer cells).
    min_volume_fraction : float
        Labels smaller than this fraction of the expected cell volume are dropped.

    Returns
    -------
    labels : ndarray of int32, shape like ``stack``
        0 is background, ``1..n`` are cells ordered by (z, y, x) of their centre.

    Raises
    ------
    InputError
        If the stack is not 3D, holds NaNs, or no cell is found.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    stack = _check_stack(stack)
    voxel = np.asarray(voxel_um, float)
    radius_vox = np.asarray(cell_radius_um, float) / voxel
    if np.any(radius_vox <= 0) or voxel.shape != (3,):
        raise InputError("voxel size and cell radius must be three positive numbers (z, y, x)")

    # LoG at sigma = r / sqrt(3) peaks at the centre of a ball of radius r; scale-normalised
    # per axis so anisotropic voxels weigh alike.
    sigma = np.maximum(radius_vox / np.sqrt(3.0), 0.5)
    terms = []
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 2
        terms.append(-(sigma[axis] ** 2) * ndimage.gaussian_filter(stack, sigma, order=order))
    response = terms[0] + terms[1] + terms[2]
    # A cell is brighter than its surroundings along every axis (each axis carries a fair share
    # of the response); edges and ridges are flat along some axis.
    curved = np.ones(stack.shape, bool)
    for term in terms:
        curved &= term > 0.1 * response
    del terms

    window = np.maximum(np.round(radius_vox).astype(int), 1) * 2 + 1
    local_max = (response == ndimage.maximum_filter(response, size=window, mode="nearest")) & (response > 0) & curved
    # Noise level of the response (robust), so pure noise is not taken for cells.
    noise = 1.4826 * float(np.median(np.abs(response - np.median(response))))
    candidates = response[local_max]
    candidates = candidates[candidates > 6 * noise]
    if candidates.size == 0:
        raise InputError("no cells found in the two-photon stack (no blob-like structure of the given size)")
    cut = max(threshold * float(np.percentile(candidates, 95)), 6 * noise)
    peaks = np.argwhere(local_max & (response > cut))

    smooth = ndimage.gaussian_filter(stack, np.maximum(radius_vox / 3.0, 0.5))
    foreground = smooth > threshold_otsu(smooth)
    peaks = peaks[foreground[tuple(peaks.T)]]
    if len(peaks) == 0:
        raise InputError("no cells found in the two-photon stack (no bright blob above the background)")
    markers = np.zeros(stack.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-smooth, markers, mask=foreground)

    # Drop fragments and renumber in (z, y, x) order of the centres.
    expected_volume = 4.0 / 3.0 * np.pi * np.prod(radius_vox)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[counts >= min_volume_fraction * expected_volume]
    if len(keep) == 0:
        raise InputError("no cells found in the two-photon stack (every candidate is smaller than a cell)")
    centres = np.array(ndimage.center_of_mass(np.ones_like(stack), labels, keep))
    keep = keep[np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[keep] = np.arange(1, len(keep) + 1)
    return lookup[labels]


def label_centres(labels: np.ndarray) -> np.ndarray:
    """Centroids ``(n, 3)`` (voxel indices) of labels ``1..n``; NaN rows for missing labels."""
    from scipy import ndimage

    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros((0, 3))
    return np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, np.arange(1, n + 1)), float).reshape(n, 3)
