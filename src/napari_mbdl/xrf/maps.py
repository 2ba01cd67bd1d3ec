"""Per-pixel elemental quantities and confidences with one shared design matrix (numpy; streamed by the engine).

Two methods share the design (one unit-area column per line family of each element, plus two
continuum columns from the sum spectrum):

``linear``
    The fast linear fit of PyMca: unconstrained least squares with the precomputed
    pseudo-inverse, negative quantities clipped to zero.
``fri``
    The FRI pipeline's fit: element lines placed where the FRI pulses were found (refined
    calibration), elements switched off in superpixels where the local fit does not find them
    (local detection), non-negative least squares (active sets solved per distinct column set,
    polished by FISTA on the shared Gram matrix).

Both return, per element, the counts of its main line family (quantity) and the quantity divided
by its standard error under Poisson noise (confidence, in standard deviations).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine.progress import checkpoint

METHODS = ("fri", "linear")


@dataclass(frozen=True)
class FitModel:
    """Everything a block needs: the design matrix and which column is each element's quantity."""

    elements: tuple[str, ...]
    family_labels: tuple[str, ...]
    design: np.ndarray                  # (n_channels, n_columns): families..., continuum columns
    main_columns: tuple[int, ...]       # per element, its quantity column
    element_of_column: tuple[int, ...]  # per column, element index (-1 for continuum)
    method: str = "fri"
    superpixel: int = 8
    local_threshold: float = 3.0
    iterations: int = 30

    @property
    def n_outputs(self) -> int:
        return 2 * len(self.elements)

    def key(self) -> str:
        digest = hashlib.sha1(np.ascontiguousarray(self.design, dtype=np.float32).tobytes()).hexdigest()[:12]
        return f"xrf/{self.method}/{'-'.join(self.elements)}/{self.superpixel}/{digest}"


def build_model(identification, n_channels, detector, sum_spectrum, background, method="fri", superpixel=8) -> FitModel:
    """Design matrix for the per-pixel fit of the identified elements.

    The quantity column of an element is its family with the most counts in the sum spectrum.
    """
    from scipy.optimize import nnls

    from napari_mbdl.xrf.spectral import family_template

    energies = identification.calibration.energies(n_channels)
    columns, labels, owner = [], [], []
    for index, symbol in enumerate(identification.elements):
        for family in identification.families[symbol]:
            columns.append(family_template(family, energies, detector))
            labels.append(family.label)
            owner.append(index)
    shape = np.clip(np.asarray(background, dtype=np.float64), 0, None)
    shape = shape / max(shape.sum(), 1e-12)
    ramp = shape * np.linspace(0.0, 2.0, n_channels)
    ramp = ramp / max(ramp.sum(), 1e-12)
    design = np.stack([*columns, shape, ramp], 1)
    # which family carries each element's counts: fit the sum spectrum once
    weights = 1.0 / np.sqrt(np.clip(sum_spectrum, 1.0, None))
    coefficients, _ = nnls(design * weights[:, None], np.asarray(sum_spectrum, float) * weights, maxiter=100 * design.shape[1])
    main = []
    for index in range(len(identification.elements)):
        own = [c for c, o in enumerate(owner) if o == index]
        main.append(max(own, key=lambda c: coefficients[c]))
    return FitModel(
        elements=tuple(identification.elements),
        family_labels=tuple(labels),
        design=design,
        main_columns=tuple(main),
        element_of_column=tuple(owner) + (-1, -1),
        method=method,
        superpixel=int(superpixel),
    )


def make_fit_function(model: FitModel):
    """Engine ``make``: precompute the pseudo-inverse and Gram matrix once; return the block function."""
    design = np.asarray(model.design, dtype=np.float64)
    pinv = np.linalg.pinv(design)                               # (n_columns, n_channels)
    gram = design.T @ design
    step = 1.0 / np.linalg.eigvalsh(gram).max()
    pinv32 = np.ascontiguousarray(pinv.T, dtype=np.float32)     # (n_channels, n_columns)
    main = np.array(model.main_columns)
    pinv_sq32 = np.ascontiguousarray(pinv.T[:, main] ** 2, dtype=np.float32)
    design32 = design.astype(np.float32)
    gram32 = gram.astype(np.float32)
    owner = np.array(model.element_of_column)

    def fit(block: np.ndarray) -> np.ndarray:
        shape = block.shape[:-1]
        spectra = block.reshape(-1, block.shape[-1]).astype(np.float32, copy=False)
        least_squares = spectra @ pinv32
        variance = spectra @ pinv_sq32
        if model.method == "linear":
            quantity = np.clip(least_squares[:, main], 0, None)
        else:
            allowed = _local_detection(block, model, owner, pinv32[:, main], pinv_sq32)
            correlation = spectra @ design32
            start = _nnls_active_set(correlation, gram, allowed)
            quantity = _nnls_fista(correlation, gram32, step, start, allowed, model.iterations)[:, main]
        confidence = quantity / np.sqrt(np.maximum(variance, 1e-6))
        out = np.concatenate([quantity, confidence], axis=1).astype(np.float32)
        return out.reshape(*shape, model.n_outputs)

    return fit


def _local_detection(block, model, owner, pinv_main, pinv_sq_main):
    """Mask (pixels, columns): an element's columns stay on where its superpixel's summed fit is significant."""
    n_columns = owner.size
    n_pixels = int(np.prod(block.shape[:-1]))
    allowed = np.ones((n_pixels, n_columns), dtype=bool)
    s = model.superpixel
    if block.ndim < 3 or s <= 1:
        return allowed
    ny, nx, n_channels = block.shape[-3:]
    cube = block.reshape(-1, ny, nx, n_channels)
    py, px = -ny % s, -nx % s
    if py or px:  # pad with empty pixels so superpixels tile the block
        cube = np.pad(cube, ((0, 0), (0, py), (0, px), (0, 0)))
    b = cube.shape[0]
    sums = cube.reshape(b, (ny + py) // s, s, (nx + px) // s, s, n_channels).sum(axis=(2, 4), dtype=np.float32)
    z = (sums @ pinv_main) / np.sqrt(np.maximum(sums @ pinv_sq_main, 1e-6))     # (b, sy, sx, n_elements)
    present = np.repeat(np.repeat(z > model.local_threshold, s, axis=1), s, axis=2)[:, :ny, :nx]
    present = present.reshape(-1, present.shape[-1])
    for column, element in enumerate(owner):
        if element >= 0:
            allowed[:, column] = present[:, element]
    return allowed


def _nnls_active_set(correlation, gram, allowed, rounds: int = 8):
    """Non-negative least squares for many spectra sharing one design: Lawson-Hanson style active sets.

    Every pixel starts with all its allowed columns; columns whose coefficient comes out negative
    are dropped and the pixel is re-solved, until none is negative.  Pixels with the same set of
    columns are solved together (one small Cholesky solve per distinct set), so a block costs a
    handful of K x K solves; dropped columns that would come back are recovered by the FISTA
    polish that follows.
    """
    n_pixels, n_columns = correlation.shape
    active = allowed.copy()
    x = np.zeros((n_pixels, n_columns), dtype=np.float64)
    for _ in range(rounds):
        patterns, inverse = np.unique(active, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        for index, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse == index)
            cols = np.flatnonzero(pattern)
            x[rows] = 0.0
            if cols.size:
                sub = gram[np.ix_(cols, cols)].astype(np.float64)
                x[np.ix_(rows, cols)] = np.linalg.solve(sub, correlation[np.ix_(rows, cols)].T.astype(np.float64)).T
        negative = x < 0
        if not negative.any():
            break
        active &= ~negative
    return np.clip(x, 0, None).astype(np.float32)


def _nnls_fista(correlation, gram, step, start, allowed, iterations, tolerance=1e-2):
    """Non-negative least squares for many spectra sharing one design (FISTA on the Gram matrix).

    Used to polish the active-set solution: starts from ``start`` (clipped) and stops early once no
    coefficient moves by more than ``tolerance`` counts between iterations.
    """
    mask = allowed.astype(np.float32)
    x = np.clip(start, 0, None).astype(np.float32) * mask
    z = x.copy()
    x_next = np.empty_like(x)
    gradient = np.empty_like(x)
    step = np.float32(step)
    t = 1.0
    for iteration in range(iterations):
        checkpoint()  # Cancel within a large block of pixels
        np.matmul(z, gram, out=gradient)
        gradient -= correlation
        gradient *= step
        np.subtract(z, gradient, out=x_next)
        np.maximum(x_next, 0, out=x_next)
        x_next *= mask
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        momentum = np.float32((t - 1.0) / t_next)
        np.subtract(x_next, x, out=z)                      # z <- x_next + momentum * (x_next - x)
        if iteration % 5 == 4 and np.abs(z).max() < tolerance:
            x, x_next = x_next, x
            break
        z *= momentum
        z += x_next
        x, x_next = x_next, x
        t = t_next
    return x
