"""Classic light-field deconvolution baselines: Richardson-Lucy (as napari-LF / pyolaf) and ISRA.

Both are multiplicative, keep the volume non-negative, and take a batch of light fields at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from napari_mbdl.engine.errors import InputError
from napari_mbdl.lfm.operator import LFMOperator

_EPS = 1e-6


def _prepare(H: LFMOperator, light_field, nonnegative: bool = True):
    """Light field(s) as a (B, H, W) tensor on the operator's device; checks shape and finiteness."""
    is_numpy = not isinstance(light_field, torch.Tensor)
    y = torch.as_tensor(np.asarray(light_field) if is_numpy else light_field)
    batched = y.ndim == 3
    if y.ndim == 2:
        y = y[None]
    elif y.ndim != 3:
        raise InputError(f"expected a light field (H, W) or a batch (B, H, W), got shape {tuple(y.shape)}")
    y = y.to(device=H.weight.device, dtype=H.weight.dtype)
    if not torch.isfinite(y).all():
        raise InputError("light field contains NaN or infinite values")
    H.lenslet_grid(y.shape)
    return (y.clamp_min(0) if nonnegative else y), batched, is_numpy


def _flat_start(H: LFMOperator, y: torch.Tensor) -> torch.Tensor:
    """A uniform volume with the light field's total flux (the usual RL start)."""
    norm = H.adjoint_ones(y.shape)
    level = y.sum(dim=(1, 2)) / norm.sum().clamp_min(_EPS)
    return level.view(-1, 1, 1, 1).clamp_min(_EPS) * torch.ones_like(norm).expand(y.shape[0], -1, -1, -1)


def _start(H: LFMOperator, y: torch.Tensor, x0) -> torch.Tensor:
    if x0 is None:
        return _flat_start(H, y)
    x0 = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0, dtype=y.dtype, device=y.device)
    return x0.reshape(y.shape[0], *H.volume_shape(y.shape)).clamp_min(_EPS)


def _finish(x: torch.Tensor, batched: bool, is_numpy: bool):
    x = x if batched else x[0]
    return x.detach().cpu().numpy() if is_numpy else x


@torch.no_grad()
def richardson_lucy(H: LFMOperator, light_field, n_iter: int = 30, x0=None,
                    callback: Callable[[int, torch.Tensor], None] | None = None):
    """Richardson-Lucy deconvolution ``x <- x * H^T(y / Hx) / H^T 1``.

    Parameters
    ----------
    H : LFMOperator
    light_field : array (H, W) or (B, H, W)
        Negative values (read noise after offset removal) are clipped to 0.
    n_iter : int
    x0 : array, optional
        Start volume (default: uniform with the light field's flux).
    callback : callable, optional
        ``callback(iteration, x)`` after every iteration (progress, cancel).

    Returns
    -------
    volume (Z, Y, X) or (B, Z, Y, X), same kind (numpy / torch) as the input.
    """
    y, batched, is_numpy = _prepare(H, light_field)
    norm = H.adjoint_ones(y.shape).clamp_min(_EPS)
    x = _start(H, y, x0)
    for it in range(int(n_iter)):
        ratio = y / H.forward(x).clamp_min(_EPS)
        x = x * H.adjoint(ratio) / norm
        if callback is not None:
            callback(it + 1, x)
    return _finish(x, batched, is_numpy)


@torch.no_grad()
def isra(H: LFMOperator, light_field, n_iter: int = 30, x0=None,
         callback: Callable[[int, torch.Tensor], None] | None = None):
    """Image-space reconstruction algorithm ``x <- x * H^T y / H^T H x`` (least squares, non-negative).

    Parameters and returns as :func:`richardson_lucy`.
    """
    y, batched, is_numpy = _prepare(H, light_field)
    hty = H.adjoint(y)
    x = _start(H, y, x0)
    for it in range(int(n_iter)):
        x = x * hty / H.normal(x).clamp_min(_EPS)
        if callback is not None:
            callback(it + 1, x)
    return _finish(x, batched, is_numpy)
