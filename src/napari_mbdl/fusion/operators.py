"""A thin numpy view of any linear light-field operator (``forward`` / ``adjoint``).

The fusion solvers work with any object that maps a volume ``(z, y, x)`` to a light field
``(v, u)`` with ``forward`` and back with ``adjoint``: the physical LFM operator of
:mod:`napari_mbdl.lfm`, or a small convolution operator in the tests.  Such objects may take
and return numpy arrays or torch tensors, one volume at a time or a batch; this module hides
the difference so the fusion code only sees float32 numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mbdl.engine.errors import InputError


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


@dataclass
class NumpyOperator:
    """Numpy wrapper of a linear operator with ``forward`` and ``adjoint``.

    Parameters
    ----------
    operator : object
        Has ``forward(volume) -> light_field`` and ``adjoint(light_field) -> volume``.
    volume_shape : tuple of int
        Shape ``(z, y, x)`` of the volumes it maps.
    light_field_shape : tuple of int
        Shape ``(v, u)`` of the light fields it produces.
    batched : bool
        The operator also maps batches ``(n, z, y, x) -> (n, v, u)`` in one call.
    """

    operator: Any
    volume_shape: tuple[int, int, int]
    light_field_shape: tuple[int, int]
    batched: bool = False

    def forward(self, volume: np.ndarray) -> np.ndarray:
        """Light field(s) of one volume ``(z, y, x)`` or a batch ``(n, z, y, x)``."""
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim == 4:
            if len(volume) == 0:
                return np.zeros((0, *self.light_field_shape), np.float32)
            if self.batched:
                return _to_numpy(self.operator.forward(volume)).reshape(len(volume), *self.light_field_shape)
            return np.stack([self.forward(v) for v in volume])
        out = _to_numpy(self.operator.forward(volume))
        return out.reshape(self.light_field_shape)

    def adjoint(self, light_field: np.ndarray) -> np.ndarray:
        """Back-projection(s) of one light field ``(v, u)`` or a batch ``(n, v, u)``."""
        light_field = np.asarray(light_field, dtype=np.float32)
        if light_field.ndim == 3:
            if self.batched and len(light_field):
                return _to_numpy(self.operator.adjoint(light_field)).reshape(len(light_field), *self.volume_shape)
            return np.stack([self.adjoint(lf) for lf in light_field])
        out = _to_numpy(self.operator.adjoint(light_field))
        return out.reshape(self.volume_shape)


def as_numpy_operator(operator: Any, volume_shape=None, light_field_shape=None) -> NumpyOperator:
    """Wrap ``operator`` so it takes and returns float32 numpy arrays.

    Shapes missing from the arguments are read from the operator's ``volume_shape`` and
    ``light_field_shape`` attributes, or found by one adjoint/forward call.

    Parameters
    ----------
    operator : object
        Anything with ``forward`` and ``adjoint`` methods (already a :class:`NumpyOperator` is
        returned unchanged).
    volume_shape, light_field_shape : tuple of int, optional
        Shapes of the volume ``(z, y, x)`` and light field ``(v, u)``.

    Returns
    -------
    NumpyOperator
    """
    if isinstance(operator, NumpyOperator):
        return operator
    if not (hasattr(operator, "forward") and hasattr(operator, "adjoint")):
        raise InputError("the light-field operator needs forward() and adjoint() methods")

    def attribute(name):  # some operators have methods, not attributes, of these names
        value = getattr(operator, name, None)
        return None if callable(value) else value

    volume_shape = volume_shape or attribute("volume_shape")
    light_field_shape = light_field_shape or attribute("light_field_shape")
    if light_field_shape is None and volume_shape is not None and callable(getattr(operator, "lf_shape", None)):
        light_field_shape = operator.lf_shape(volume_shape)
    if volume_shape is None and light_field_shape is None:
        raise InputError("give the volume shape or the light-field shape of the operator")
    if volume_shape is None:
        volume_shape = _to_numpy(operator.adjoint(np.zeros(light_field_shape, np.float32))).shape
    if light_field_shape is None:
        light_field_shape = _to_numpy(operator.forward(np.zeros(volume_shape, np.float32))).shape
    volume_shape = tuple(int(s) for s in volume_shape)
    light_field_shape = tuple(int(s) for s in light_field_shape)
    if len(volume_shape) != 3 or len(light_field_shape) != 2:
        raise InputError(
            f"the operator must map (z, y, x) volumes to (v, u) light fields, not {volume_shape} -> {light_field_shape}"
        )
    # Batched calls are much faster on torch operators; check that one gives the right shape.
    try:
        probe = _to_numpy(operator.forward(np.zeros((2, *volume_shape), np.float32)))
        batched = probe.shape == (2, *light_field_shape)
    except Exception:  # an operator for single volumes only
        batched = False
    return NumpyOperator(operator, volume_shape, light_field_shape, batched)


def richardson_lucy(
    operator: NumpyOperator, light_field: np.ndarray, n_iter: int = 20, eps: float = 1e-6
) -> np.ndarray:
    """Richardson-Lucy (ML-EM) volume estimate of one light field.

    Parameters
    ----------
    operator : NumpyOperator
        The light-field forward model ``H``.
    light_field : ndarray, shape (v, u)
        Measured light field (non-negative counts).
    n_iter : int
        Multiplicative updates ``x <- x * H^T(y / Hx) / H^T 1``.
    eps : float
        Guards the divisions.

    Returns
    -------
    ndarray, shape (z, y, x)
        Non-negative volume estimate.
    """
    y = np.clip(np.asarray(light_field, np.float32), 0, None)
    normaliser = operator.adjoint(np.ones(operator.light_field_shape, np.float32))
    normaliser = np.maximum(normaliser, eps * max(float(normaliser.max()), eps))
    # A flat start with the right total brightness.
    x = np.full(operator.volume_shape, max(float(y.sum()), eps) / max(float(normaliser.sum()), eps), np.float32)
    for _ in range(n_iter):
        ratio = y / np.maximum(operator.forward(x), eps)
        x *= operator.adjoint(ratio) / normaliser
    return x
