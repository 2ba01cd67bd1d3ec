"""Activity of known footprints from light-field frames: ``y_t ~ H A c_t`` with ``c_t >= 0``.

The footprints ``A`` (one LFM-space volume per neuron, from the 2P stack) are pushed through the
forward model once, giving one light field per neuron: the columns of ``M = H A``, plus one for
the uniform out-of-cell background and one for a camera offset.  Each frame then needs only a
small non-negative least-squares problem ``min ||y_t - M c_t||^2, c_t >= 0`` (the offset may be
negative), solved for a batch of frames at once on the Gram matrix ``M^T M`` by accelerated
projected gradient (FISTA), started from the clipped unconstrained solution.

The block functions here are built by the engine (:func:`napari_mbdl.engine.run_blocks`), once
per process, from picklable ``functools.partial`` objects.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.engine.progress import checkpoint


def design_matrix(operator, footprints: np.ndarray, background: bool = True):
    """Columns ``M = [H A_1, ..., H A_n, H 1, 1]`` (flattened light fields), unit-normalised.

    Parameters
    ----------
    operator : NumpyOperator
        The light-field forward model.
    footprints : ndarray, shape (n, z, y, x)
        Neuron footprints in LFM space.
    background : bool
        Add the uniform-background and camera-offset columns.

    Returns
    -------
    design : ndarray, shape (pixels, k), float32
        Columns scaled to unit norm (better conditioning).
    norms : ndarray, shape (k,)
        The scale removed from each column: coefficients of the unit columns divided by
        ``norms`` are the coefficients of the original columns.
    n_constrained : int
        How many leading columns are constrained non-negative (all but the camera offset).
    """
    footprints = np.asarray(footprints, np.float32)
    if footprints.ndim != 4 or len(footprints) == 0:
        raise InputError("need at least one neuron footprint (n, z, y, x) to extract activity")
    columns = operator.forward(footprints).reshape(len(footprints), -1)
    n_constrained = len(footprints)
    if background:
        uniform = operator.forward(np.ones(operator.volume_shape, np.float32)).reshape(1, -1)
        offset = np.ones((1, columns.shape[1]), np.float32)
        columns = np.concatenate([columns, uniform, offset])
        n_constrained += 1
    norms = np.linalg.norm(columns.astype(np.float64), axis=1)
    if np.any(norms <= 0):
        empty = np.flatnonzero(norms <= 0)
        raise InputError(f"footprint(s) {empty.tolist()} send no light to the camera (outside the field of view?)")
    design = (columns / norms[:, None]).T.astype(np.float32)
    return np.ascontiguousarray(design), norms, n_constrained


def design_key(design: np.ndarray, n_iter: int) -> str:
    """Operation key that changes whenever the footprints or the solver change (safe resume)."""
    digest = hashlib.sha1(np.ascontiguousarray(design).tobytes()).hexdigest()[:16]
    return f"fusion-activity/{digest}/nnls{n_iter}"


def solve_nnls_batch(gram, rhs, n_constrained: int, n_iter: int = 200, tol: float = 1e-6):
    """Batched NNLS on normal equations: ``min_c 0.5 c^T G c - b^T c`` with ``c[:n_constrained] >= 0``.

    Parameters
    ----------
    gram : torch.Tensor, shape (k, k)
    rhs : torch.Tensor, shape (B, k)
    n_constrained : int
        Leading entries kept non-negative; the rest are free.
    n_iter : int
        Most FISTA iterations.
    tol : float
        Stop when the largest relative change of ``c`` in an iteration is below this.

    Returns
    -------
    torch.Tensor, shape (B, k)
    """
    import torch

    k = gram.shape[0]
    lipschitz = float(torch.linalg.eigvalsh(gram.double()).max())
    step = 1.0 / max(lipschitz, 1e-12)
    ridge = 1e-6 * lipschitz * torch.eye(k, dtype=gram.dtype, device=gram.device)
    # Start from the unconstrained least-squares solution, clipped: already close for most frames.
    start = torch.linalg.solve(gram + ridge, rhs.T).T

    def project(c):
        return torch.cat([c[:, :n_constrained].clamp_min(0), c[:, n_constrained:]], dim=1)

    c = project(start)
    z = c.clone()
    t = 1.0
    for _ in range(n_iter):
        checkpoint()
        c_next = project(z - step * (z @ gram - rhs))
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = c_next + ((t - 1.0) / t_next) * (c_next - c)
        change = (c_next - c).abs().max() / c_next.abs().max().clamp_min(1e-12)
        c, t = c_next, t_next
        if float(change) < tol:
            break
    return c


def make_activity_fn(device: str, design: np.ndarray, norms: np.ndarray, n_constrained: int, n_iter: int = 200):
    """Engine block function: light-field frames ``(tiles, frames, v, u)`` -> coefficients ``(tiles, frames, k)``."""
    import torch

    dev = torch.device(device)
    # float64 on the CPU is cheap for these small systems and avoids round-off in M^T y; GPUs
    # are fast in float32.
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    matrix = torch.as_tensor(design, device=dev, dtype=dtype)
    gram = matrix.T @ matrix
    scale = torch.as_tensor(1.0 / np.asarray(norms, float), device=dev, dtype=dtype)
    pixels = design.shape[0]

    def fn(block: np.ndarray) -> np.ndarray:
        # block: (tiles, frames, v, u) -> every frame is one independent problem.
        lead = block.shape[:-2]
        frames = torch.as_tensor(np.asarray(block).reshape(-1, pixels), device=dev, dtype=dtype)
        with torch.no_grad():
            coefficients = solve_nnls_batch(gram, frames @ matrix, n_constrained, n_iter=n_iter)
        return (coefficients * scale).to(torch.float32).cpu().numpy().reshape(*lead, -1)

    return fn


def activity_operation(design: np.ndarray, norms: np.ndarray, n_constrained: int, n_iter: int = 200):
    """The engine :class:`~napari_mbdl.engine.Operation` of per-frame footprint NNLS."""
    from napari_mbdl.engine import Operation

    pixels, k = design.shape
    return Operation(
        key=design_key(design, n_iter),
        make=functools.partial(make_activity_fn, design=design, norms=norms, n_constrained=n_constrained, n_iter=n_iter),
        halo=(0,),
        out_core_shape=(k,),
        out_dtype="float32",
        # frames in float64 plus their projection: a few copies of each input pixel.
        bytes_per_voxel=24.0,
        uses_torch=True,
        min_tile=(1,),
    )


def make_volume_fn(device: str, footprints: np.ndarray):
    """Engine block function: coefficients ``(tiles, frames, k)`` -> activity volumes ``(tiles, frames, z, y, x)``."""
    flat = np.asarray(footprints, np.float32).reshape(len(footprints), -1)
    shape = footprints.shape[1:]

    def fn(block: np.ndarray) -> np.ndarray:
        # block: (tiles, frames, k) coefficients; the trailing background/offset columns are not cells.
        block = np.asarray(block, np.float32)
        lead = block.shape[:-1]
        return (block.reshape(-1, block.shape[-1])[:, : len(flat)] @ flat).reshape(*lead, *shape)

    return fn


def volume_operation(footprints: np.ndarray):
    """Engine operation rendering activity volumes ``sum_i c_i(t) A_i`` from trace rows."""
    from napari_mbdl.engine import Operation

    digest = hashlib.sha1(np.ascontiguousarray(footprints).tobytes()).hexdigest()[:16]
    return Operation(
        key=f"fusion-volumes/{digest}",
        make=functools.partial(make_volume_fn, footprints=np.asarray(footprints, np.float32)),
        halo=(0,),
        out_core_shape=tuple(int(s) for s in footprints.shape[1:]),
        out_dtype="float32",
        bytes_per_voxel=8.0 * max(1, int(np.prod(footprints.shape[1:])) // max(1, footprints.shape[0])),
        uses_torch=False,
        min_tile=(1,),
    )


def delta_f_over_f(traces: np.ndarray, percentile: float = 20.0, floor: float | None = None) -> np.ndarray:
    """dF/F of traces ``(n, t)`` against a per-neuron baseline (a low percentile over time).

    Parameters
    ----------
    traces : ndarray, shape (n, t)
    percentile : float
        Baseline ``F0`` percentile of each trace.
    floor : float, optional
        Smallest baseline used (guards silent, dim neurons); default 1% of the median baseline.
    """
    traces = np.asarray(traces, np.float64)
    baseline = np.percentile(traces, percentile, axis=1, keepdims=True)
    if floor is None:
        positive = baseline[baseline > 0]
        floor = 0.01 * float(np.median(positive)) if positive.size else 1e-6
    baseline = np.maximum(baseline, max(floor, 1e-12))
    return ((traces - baseline) / baseline).astype(np.float32)


def make_rl_average_fn(device: str, operator_factory, footprints: np.ndarray, n_iter: int = 10):
    """Engine block function of the baseline: Richardson-Lucy per frame, then mean inside footprints."""
    import torch

    from napari_mbdl.fusion.operators import as_numpy_operator

    operator = as_numpy_operator(operator_factory(device), volume_shape=footprints.shape[1:])
    weights = np.asarray(footprints, np.float32).reshape(len(footprints), -1)
    weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
    normaliser = operator.adjoint(np.ones(operator.light_field_shape, np.float32))
    normaliser = np.maximum(normaliser, 1e-6 * float(normaliser.max()))

    def fn(block: np.ndarray) -> np.ndarray:
        lead = block.shape[:-2]
        y = np.clip(np.asarray(block, np.float32), 0, None).reshape(-1, *block.shape[-2:])
        b = len(y)
        x = np.broadcast_to(
            (y.reshape(b, -1).sum(1) / normaliser.sum())[:, None, None, None], (b, *operator.volume_shape)
        ).astype(np.float32)
        with torch.no_grad():
            for k in range(n_iter):
                ratio = y / np.maximum(operator.forward(x), 1e-6)
                x = x * operator.adjoint(ratio) / normaliser
                checkpoint((k + 1) / n_iter)
        return (x.reshape(b, -1) @ weights.T).astype(np.float32).reshape(*lead, -1)

    return fn


def rl_average_operation(operator_factory, footprints: np.ndarray, n_iter: int = 10, key_suffix: str = ""):
    """Engine operation of the baseline (per-frame volume reconstruction + footprint averages)."""
    from napari_mbdl.engine import Operation

    digest = hashlib.sha1(np.ascontiguousarray(footprints).tobytes()).hexdigest()[:16]
    return Operation(
        key=f"fusion-rl-baseline/{digest}/rl{n_iter}{key_suffix}",
        make=functools.partial(make_rl_average_fn, operator_factory=operator_factory, footprints=footprints,
                               n_iter=n_iter),
        halo=(0,),
        out_core_shape=(len(footprints),),
        out_dtype="float32",
        bytes_per_voxel=64.0,
        uses_torch=True,
        min_tile=(1,),
    )
