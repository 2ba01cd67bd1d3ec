"""Unfolded ISTA network for light-field volume reconstruction (Verinaz-Jadan et al. 2023).

Layer ``k`` is one ISTA step for ``min ||y - Hx||^2 + ||x||_1, x >= 0`` with ``H`` fixed by the wave-optics PSF
and learned per-layer, per-depth step ``w_k`` and threshold ``lambda_k``, plus two small learned corrections:
a momentum term (FISTA-style extrapolation ``z_k = x_k + beta_k (x_k - x_{k-1})``, started at FISTA's schedule)
and ``C_k``, a two-layer 3 x 3 CNN across depths whose output layer starts at zero::

    z_k     = x_k + beta_k (x_k - x_{k-1})
    x_{k+1} = ReLU(z_k - w_k * (H^T H z_k - H^T y) - lambda_k + C_k(z_k))

At initialisation the network is exactly FISTA with step ``1 / ||H^T H||`` and a small threshold.
The light field is divided by a robust scale (its 99.9th percentile) before the layers and the volume multiplied
back, so the network works at any brightness.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_mbdl.engine.errors import InputError
from napari_mbdl.lfm.operator import LFMOperator
from napari_mbdl.lfm.solvers import _prepare

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "unfolded_ista_default.safetensors"


def robust_scale(y: torch.Tensor) -> torch.Tensor:
    """Per-light-field scale ``(B, 1, 1)``: the 99.9th percentile (subsampled for big frames)."""
    flat = y.reshape(y.shape[0], -1)
    if flat.shape[1] > 1_000_000:
        flat = flat[:, :: flat.shape[1] // 1_000_000 + 1]
    q = torch.quantile(flat.float(), 0.999, dim=1).to(y.dtype)
    return q.clamp_min(1e-6).view(-1, 1, 1)


class UnfoldedISTA(torch.nn.Module):
    """``n_layers`` unfolded ISTA iterations with learned steps, thresholds and small corrections.

    Parameters
    ----------
    n_depths : int
        Depth planes of the volume (must match the operator's PSF).
    n_layers : int
        Unrolled iterations ``K``.
    step : float
        Initial gradient step (``1 / ||H^T H||`` is the ISTA choice).
    threshold : float
        Initial soft threshold in normalised units.
    correction : bool
        Add the learned cross-depth CNN corrections.
    hidden : int
        Channels of the correction CNNs.
    momentum : bool
        Add the learned FISTA-style momentum.
    """

    def __init__(self, n_depths: int, n_layers: int = 8, step: float = 0.9, threshold: float = 0.002,
                 correction: bool = True, hidden: int = 16, momentum: bool = True):
        super().__init__()
        self.n_depths, self.n_layers, self.use_correction = int(n_depths), int(n_layers), bool(correction)
        self.hidden, self.use_momentum = int(hidden), bool(momentum)
        # log-parametrised so steps and thresholds stay positive during training
        self.log_step = torch.nn.Parameter(torch.full((n_layers, n_depths), float(np.log(step))))
        self.log_threshold = torch.nn.Parameter(torch.full((n_layers, n_depths), float(np.log(threshold))))
        if momentum:
            t, betas = 1.0, []
            for _ in range(n_layers):
                t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
                betas.append((t - 1) / t_next)
                t = t_next
            self.momentum = torch.nn.Parameter(torch.tensor(betas, dtype=torch.float32))
        if correction:
            gen = torch.Generator().manual_seed(0)
            self.correction_in = torch.nn.Parameter(
                torch.randn(n_layers, hidden, n_depths, 3, 3, generator=gen) / np.sqrt(9 * n_depths))
            self.correction_out = torch.nn.Parameter(torch.zeros(n_layers, n_depths, hidden, 3, 3))

    def config(self) -> dict:
        return {"n_depths": self.n_depths, "n_layers": self.n_layers, "correction": self.use_correction,
                "hidden": self.hidden, "momentum": self.use_momentum}

    def _correct(self, k: int, z: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(F.conv2d(z, self.correction_in[k].to(z.dtype), padding=1))
        return F.conv2d(hidden, self.correction_out[k].to(z.dtype), padding=1)

    def forward(self, H: LFMOperator, y: torch.Tensor, callback=None) -> torch.Tensor:
        """Volume ``(B, Z, Y, X)`` from light fields ``(B, H, W)`` (tensors on the operator's device)."""
        if H.n_depths != self.n_depths:
            raise InputError(f"the network was trained for {self.n_depths} depths but the PSF has {H.n_depths}")
        scale = robust_scale(y)
        yn = y / scale
        hty = H.adjoint(yn)
        steps = self.log_step.exp().to(hty.dtype)
        thresholds = self.log_threshold.exp().to(hty.dtype)
        x = torch.zeros_like(hty)
        previous = x
        for k in range(self.n_layers):
            w, lam = steps[k].view(1, -1, 1, 1), thresholds[k].view(1, -1, 1, 1)
            z = x + self.momentum[k].to(x.dtype) * (x - previous) if self.use_momentum and k > 1 else x
            # x_0 = 0: the first gradient is just -H^T y, no operator call needed
            grad = -hty if k == 0 else H.adjoint(H.forward(z)) - hty
            update = z - w * grad - lam
            if self.use_correction and k > 0:
                update = update + self._correct(k, z)
            previous, x = x, F.relu(update)
            if callback is not None:
                callback(k + 1, x)
        return x * scale.view(-1, 1, 1, 1)

    def reconstruct(self, H: LFMOperator, light_field, callback=None):
        """numpy/torch convenience: ``(H, W)`` or ``(B, H, W)`` -> volume(s), no gradients."""
        y, batched, is_numpy = _prepare(H, light_field, nonnegative=False)
        with torch.no_grad():
            x = self.to(device=H.weight.device)(H, y, callback=callback)
        x = x if batched else x[0]
        return x.cpu().numpy() if is_numpy else x

    # -- weights --------------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        meta = {"config": json.dumps(self.config())}
        meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata=meta)
        return Path(path)


def load_unfolded(path: str | Path | None = None, optics=None) -> tuple[UnfoldedISTA, dict]:
    """Load trained weights (default: the network shipped for the default optics).

    Parameters
    ----------
    path : str or Path, optional
    optics : LFOptics, optional
        If given, refuse weights trained for other optics.

    Returns
    -------
    (UnfoldedISTA, metadata dict)
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise InputError(f"unfolded-network weights not found: {path}")
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    meta = {k: json.loads(v) for k, v in raw.items()}
    config = meta.get("config")
    if not config:
        raise InputError(f"{path} has no unfolded-ISTA config; was it written by napari_mbdl.lfm.train?")
    if optics is not None and "optics" in meta and meta["optics"] != optics.to_dict():
        raise InputError(
            "the unfolded network was trained for different optics than this PSF; "
            "train one for these optics (python -m napari_mbdl.lfm.train --optics ...) or use method='rl'"
        )
    model = UnfoldedISTA(**config)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta
