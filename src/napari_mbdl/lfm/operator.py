"""Forward model ``H`` (volume -> light field) and its adjoint ``H^T``, batched, in torch.

The light field is periodic-shift-invariant with period one lenslet: a voxel at lenslet ``(a, b)``, sub-lenslet
offset ``(i, j)`` and depth ``z`` adds ``psf[z, i, j]`` centred on lenslet ``(a, b)``.  Rearranging

* the volume ``(Z, La*s, Lb*s)`` into ``Z*s*s`` offset channels on the lenslet grid ``(La, Lb)``, and
* the light field ``(La*N, Lb*N)`` into ``N*N`` pixel-offset channels on the same grid,

makes ``H`` one multichannel 2-D convolution (``Z s^2`` in, ``N^2`` out, ``P x P`` taps) and ``H^T`` the
matching transposed convolution, so ``<H x, y> = <x, H^T y>`` holds to rounding.  Outside the field of view the
volume is taken as zero.

torch is imported here at module level: this module is only imported by the compute paths, never at napari start-up.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_mbdl.engine.errors import InputError
from napari_mbdl.lfm.optics import LFOptics, LFPsf


def psf_to_weight(psf: np.ndarray, optics: LFOptics) -> np.ndarray:
    """Convolution weight ``(N*N, Z*s*s, P, P)`` from a PSF ``(Z, s, s, P*N, P*N)``.

    ``conv2d`` correlates, so the lenslet index of the PSF is flipped: output lenslet ``a`` reads input lenslet
    ``a + d - P//2`` through tap ``d``, i.e. PSF lenslet ``P - 1 - d`` relative to the source.
    """
    Z, s, N, P = optics.n_depths, optics.voxels_per_lenslet, optics.pixels_per_lenslet, optics.psf_lenslets
    w = psf.reshape(Z, s, s, P, N, P, N)  # z, i, j, la, k, lb, l
    w = w[:, :, :, ::-1, :, ::-1, :]
    w = w.transpose(4, 6, 0, 1, 2, 3, 5).reshape(N * N, Z * s * s, P, P)
    return np.ascontiguousarray(w)


class LFMOperator(torch.nn.Module):
    """Light-field forward model ``H`` and adjoint ``H^T`` from a wave-optics PSF.

    Parameters
    ----------
    psf : LFPsf
        From :func:`napari_mbdl.lfm.optics.compute_psf` or :meth:`LFPsf.load`.
    device : str or torch.device
    dtype : torch.dtype
        float32 (default) or float64 (adjoint tests).

    Notes
    -----
    Shapes (``N`` pixels and ``s`` voxels per lenslet, ``Z`` depths, ``La x Lb`` lenslets):

    * volume: ``(Z, La*s, Lb*s)`` or batched ``(B, Z, La*s, Lb*s)``;
    * light field: ``(La*N, Lb*N)`` or batched ``(B, La*N, Lb*N)``.

    Both methods accept numpy arrays (returned as numpy) or torch tensors (returned as tensors, differentiable).

    Examples
    --------
    >>> from napari_mbdl.lfm import LFOptics, compute_psf, LFMOperator
    >>> H = LFMOperator(compute_psf(LFOptics()))
    >>> lf = H.forward(volume)          # (Z, 45, 45) -> (225, 225)
    >>> back = H.adjoint(lf)            # (225, 225) -> (Z, 45, 45)
    """

    def __init__(self, psf: LFPsf, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(psf, LFPsf):
            raise InputError("LFMOperator needs an LFPsf (compute_psf(optics) or LFPsf.load(path))")
        psf.check()
        self.optics = psf.optics
        self.psf = psf
        weight = torch.as_tensor(psf_to_weight(psf.psf, psf.optics), dtype=dtype, device=device)
        self.register_buffer("weight", weight, persistent=False)
        self._ones_adjoint: dict = {}

    # -- shapes ---------------------------------------------------------------------------------------
    @property
    def n_depths(self) -> int:
        return self.optics.n_depths

    def lenslet_grid(self, lf_shape) -> tuple[int, int]:
        """Lenslets ``(La, Lb)`` of a light field of shape ``(..., H, W)``; raises if it does not fit."""
        N = self.optics.pixels_per_lenslet
        H, W = int(lf_shape[-2]), int(lf_shape[-1])
        if H % N or W % N or H == 0 or W == 0:
            raise InputError(
                f"light field of {H} x {W} pixels does not fit a grid of {N} x {N}-pixel lenslets "
                "(rectify it with the lenslet calibration, or check pixels_per_lenslet)"
            )
        return H // N, W // N

    def volume_shape(self, lf_shape) -> tuple[int, int, int]:
        La, Lb = self.lenslet_grid(lf_shape)
        s = self.optics.voxels_per_lenslet
        return (self.n_depths, La * s, Lb * s)

    def lf_shape(self, volume_shape) -> tuple[int, int]:
        s, N = self.optics.voxels_per_lenslet, self.optics.pixels_per_lenslet
        Z, Y, X = (int(v) for v in volume_shape[-3:])
        if Z != self.n_depths:
            raise InputError(f"volume has {Z} depth planes but the PSF has {self.n_depths}")
        if Y % s or X % s:
            raise InputError(f"volume of {Y} x {X} voxels is not a whole number of {s} x {s}-voxel lenslets")
        return (Y // s * N, X // s * N)

    # -- rearrangements -------------------------------------------------------------------------------
    def _volume_to_channels(self, x: torch.Tensor) -> torch.Tensor:
        B, Z, Y, X = x.shape
        s = self.optics.voxels_per_lenslet
        x = x.reshape(B, Z, Y // s, s, X // s, s).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(B, Z * s * s, Y // s, X // s)

    def _channels_to_volume(self, c: torch.Tensor) -> torch.Tensor:
        B, _, La, Lb = c.shape
        s, Z = self.optics.voxels_per_lenslet, self.n_depths
        c = c.reshape(B, Z, s, s, La, Lb).permute(0, 1, 4, 2, 5, 3)
        return c.reshape(B, Z, La * s, Lb * s)

    def _lf_to_channels(self, y: torch.Tensor) -> torch.Tensor:
        B, H, W = y.shape
        N = self.optics.pixels_per_lenslet
        y = y.reshape(B, H // N, N, W // N, N).permute(0, 2, 4, 1, 3)
        return y.reshape(B, N * N, H // N, W // N)

    def _channels_to_lf(self, c: torch.Tensor) -> torch.Tensor:
        B, _, La, Lb = c.shape
        N = self.optics.pixels_per_lenslet
        c = c.reshape(B, N, N, La, Lb).permute(0, 3, 1, 4, 2)
        return c.reshape(B, La * N, Lb * N)

    # -- operators ------------------------------------------------------------------------------------
    def _as_tensor(self, a, ndim_single: int):
        is_numpy = not isinstance(a, torch.Tensor)
        t = torch.as_tensor(np.asarray(a) if is_numpy else a)
        if t.ndim == ndim_single:
            t, batched = t[None], False
        elif t.ndim == ndim_single + 1:
            batched = True
        else:
            kind = "volume (Z, Y, X)" if ndim_single == 3 else "light field (H, W)"
            raise InputError(f"expected a {kind} or a batch of them, got shape {tuple(t.shape)}")
        t = t.to(device=self.weight.device, dtype=self.weight.dtype)
        return t, batched, is_numpy

    @staticmethod
    def _restore(t: torch.Tensor, batched: bool, is_numpy: bool):
        t = t if batched else t[0]
        return t.detach().cpu().numpy() if is_numpy else t

    def forward(self, volume):
        """Light field ``H x`` of a volume ``(Z, Y, X)`` or batch ``(B, Z, Y, X)``."""
        x, batched, is_numpy = self._as_tensor(volume, 3)
        self.lf_shape(x.shape)
        P = self.optics.psf_lenslets
        y = F.conv2d(self._volume_to_channels(x), self.weight, padding=P // 2)
        return self._restore(self._channels_to_lf(y), batched, is_numpy)

    def adjoint(self, light_field):
        """Back-projection ``H^T y`` of a light field ``(H, W)`` or batch ``(B, H, W)``."""
        y, batched, is_numpy = self._as_tensor(light_field, 2)
        self.lenslet_grid(y.shape)
        P = self.optics.psf_lenslets
        x = F.conv_transpose2d(self._lf_to_channels(y), self.weight, padding=P // 2)
        return self._restore(self._channels_to_volume(x), batched, is_numpy)

    def normal(self, volume):
        """``H^T H x``."""
        return self.adjoint(self.forward(volume))

    def adjoint_ones(self, lf_shape) -> torch.Tensor:
        """``H^T 1`` for a light field of this shape (cached): the Richardson-Lucy normaliser."""
        key = (tuple(int(v) for v in lf_shape[-2:]), self.weight.device, self.weight.dtype)
        if key not in self._ones_adjoint:
            ones = torch.ones((1, *key[0]), dtype=self.weight.dtype, device=self.weight.device)
            self._ones_adjoint[key] = self.adjoint(ones)
        return self._ones_adjoint[key]

    def lipschitz(self, lf_shape=None, n_iter: int = 30, seed: int = 0) -> float:
        """Largest eigenvalue of ``H^T H`` by power iteration (on a light field of ``lf_shape``)."""
        if lf_shape is None:
            N = self.optics.pixels_per_lenslet
            side = (2 * self.optics.psf_lenslets + 1) * N
            lf_shape = (side, side)
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand((1, *self.volume_shape(lf_shape)), generator=gen, dtype=self.weight.dtype).to(self.weight.device)
        value = 1.0
        with torch.no_grad():
            for _ in range(n_iter):
                x = self.normal(x)
                value = float(torch.linalg.vector_norm(x))
                x = x / value
        return value
