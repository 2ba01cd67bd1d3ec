"""Lifting-inspired invertible denoisers (LINN, WINNet) and the noise-level estimator (NENet).

Pure torch; napari never imports this module at start-up.

The networks follow Huang & Dragotti, "LINN: Lifting Inspired Invertible Neural Network for Image
Denoising" (EUSIPCO 2021) and "WINNet: Wavelet-inspired Invertible Network for Image Denoising"
(IEEE TIP 2022).  An image ``x`` is split by an undecimated orthonormal block transform into a
coarse part ``c`` and detail bands ``d``; ``I`` predictor/updater pairs then apply

    d <- d - P_i(c),   c <- c + U_i(d)

which the backward pass undoes exactly (``c <- c - U_i(d)``, ``d <- d + P_i(c)``) whatever the
weights are.  Denoising happens on the detail bands only (a noise-adaptive soft threshold, or a
learned ISTA "LISTA" sparse-coding block), then the backward pass maps back to an image.

Images are in [0, 1]; noise levels ``sigma`` are in 8-bit units (0..255), as in the papers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_mbdl.engine.progress import checkpoint, progress_span

#: Architecture presets; a weights file stores its full config, these are the defaults.
#: Sizes are chosen for CPU speed and short training (see weights/MODEL_CARD.md).
PRESETS: dict[str, dict[str, Any]] = {
    "winnet": dict(
        split="dct",
        block=4,
        levels=1,
        steps=4,
        channels=32,
        layers=1,
        pu="sep",
        detail="lista",
        lista_channels=32,
        lista_iters=3,
    ),
    "linn": dict(
        split="haar",
        block=2,
        levels=1,
        steps=4,
        channels=24,
        layers=1,
        pu="conv",
        detail="st",
        lista_channels=32,
        lista_iters=3,
    ),
}

#: Starting detail-band threshold per (sigma / 50): 0.4 * sigma/50 = ~2 noise std in [0, 1] units.
DETAIL_THRESHOLD_INIT = 0.4


# ----------------------------------------------------------------------------------- transforms
def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix, rows are basis vectors (row 0 is the constant)."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    mat = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    mat[0] = 1.0 / math.sqrt(n)
    return mat


def block_basis(block: int) -> torch.Tensor:
    """Orthonormal 2D basis ``(block**2, block, block)``, ordered by frequency (DC first).

    ``block=2`` is the Haar basis (average, horizontal, vertical, diagonal detail); ``block=4`` is
    the 4x4 DCT.
    """
    mat = dct_matrix(block)
    pairs = sorted(((u, v) for u in range(block) for v in range(block)), key=lambda p: (p[0] + p[1], p))
    return torch.stack([torch.outer(mat[u], mat[v]) for u, v in pairs])


def cayley(skew_params: torch.Tensor, size: int) -> torch.Tensor:
    """Orthogonal matrix ``(I - A)(I + A)^-1`` of the skew-symmetric ``A`` built from parameters."""
    a = torch.zeros(size, size, dtype=skew_params.dtype, device=skew_params.device)
    rows, cols = torch.triu_indices(size, size, offset=1)
    a = a.index_put((rows, cols), skew_params)
    a = a - a.T
    eye = torch.eye(size, dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye + a, eye - a)


class UndecimatedSplit(nn.Module):
    """Undecimated orthonormal block transform (the lifting scheme's split and merge).

    Every ``block x block`` patch (dilated by ``dilation``) is mapped to ``block**2``
    coefficients, so one image becomes ``block**2`` full-size bands; band 0 is the coarse part.
    The image border is extended by replication.  The merge averages, for every pixel, the
    reconstructions of all the patches that cover it, so ``merge(split(x)) == x`` exactly (up to
    rounding) for any image size.

    Parameters
    ----------
    block : int
        2 for the undecimated Haar split (LINN), 4 for the 4x4 DCT split (WINNet).
    dilation : int
        Spacing of the patch samples (2 at the second scale).
    learnable : bool
        If True, an orthogonal mixing of the bands (Cayley parametrisation, starting at the
        identity) is learnt: WINNet's learnable orthogonal split.
    """

    def __init__(self, block: int = 4, dilation: int = 1, learnable: bool = False):
        super().__init__()
        self.block = int(block)
        self.dilation = int(dilation)
        self.register_buffer("basis", block_basis(self.block).to(torch.float32), persistent=False)
        n = self.block**2
        self.learnable = bool(learnable)
        if self.learnable:
            self.skew = nn.Parameter(torch.zeros(n * (n - 1) // 2))
        # padding before (lo) and after (hi) so that output size equals input size
        self.lo = (self.block // 2 - 1 if self.block % 2 == 0 else self.block // 2) * self.dilation
        self.hi = (self.block - 1) * self.dilation - self.lo

    @property
    def n_bands(self) -> int:
        return self.block**2

    def kernel(self) -> torch.Tensor:
        basis = self.basis
        if self.learnable:
            q = cayley(self.skew.double(), self.n_bands).to(basis.dtype)
            basis = (q @ basis.reshape(self.n_bands, -1)).reshape_as(basis)
        return basis[:, None]  # (bands, 1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (self.lo, self.hi, self.lo, self.hi), mode="replicate")
        return F.conv2d(padded, self.kernel().to(x.dtype), dilation=self.dilation)

    def inverse(self, bands: torch.Tensor) -> torch.Tensor:
        height, width = bands.shape[-2:]
        full = F.conv_transpose2d(bands, self.kernel().to(bands.dtype), dilation=self.dilation)
        crop = (Ellipsis, slice(self.lo, self.lo + height), slice(self.lo, self.lo + width))
        ones = torch.ones(1, 1, height, width, dtype=bands.dtype, device=bands.device)
        box = torch.ones(1, 1, self.block, self.block, dtype=bands.dtype, device=bands.device)
        count = F.conv_transpose2d(ones, box, dilation=self.dilation)
        return full[crop] / count[crop]


# ------------------------------------------------------------------------------ non-linearities
class NoiseSoftThreshold(nn.Module):
    """Per-channel soft threshold ``t_c * sigma / 50`` (noise adaptive, ``t_c`` learnt, >= 0).

    ``init`` sets the starting ``t_c`` (default: small random values, as in the reference code).
    """

    def __init__(self, channels: int, init: float | None = None):
        super().__init__()
        if init is None:
            self.theta = nn.Parameter(-0.1 * torch.rand(channels))
        else:  # inverse of softplus(beta=20)
            self.theta = nn.Parameter(torch.full((channels,), math.log(math.expm1(20 * init)) / 20))

    def thresholds(self, sigma: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.theta, beta=20)[None, :, None, None] * (sigma.view(-1, 1, 1, 1) / 50.0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Soft-threshold ``x``; ``inplace=True`` (for temporaries) overwrites ``x`` when no
        gradient flows through it, which spares a large allocation per call at inference."""
        t = self.thresholds(sigma).to(x.dtype)
        # x - clamp(x, -t, t): two passes over memory (the networks are memory-bound on a CPU)
        clipped = torch.clamp(x, -t, t)
        if inplace and not (torch.is_grad_enabled() and x.requires_grad):
            return x.sub_(clipped)
        return x - clipped


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``, accumulated into ``a`` (a temporary) when no gradient needs it."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return a + b
    return a.add_(b)


def _conv(cin: int, cout: int, k: int, dilation: int, groups: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, padding=(k // 2) * dilation, dilation=dilation, bias=False, groups=groups)
    nn.init.kaiming_uniform_(conv.weight, a=0.0, mode="fan_out", nonlinearity="relu")
    return conv


class ResSepBlock(nn.Module):
    """Residual block of two depthwise-separable 3x3 convolutions with soft thresholds."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dw1 = _conv(channels, channels, 3, dilation, groups=channels)
        self.pw1 = _conv(channels, channels, 1, 1)
        self.dw2 = _conv(channels, channels, 3, dilation, groups=channels)
        self.pw2 = _conv(channels, channels, 1, 1)
        self.st1 = NoiseSoftThreshold(channels)
        self.st2 = NoiseSoftThreshold(channels)

    def forward(self, x, sigma):
        y = self.st1(self.pw1(self.dw1(x)), sigma, inplace=True)
        return self.st2(_add(self.pw2(self.dw2(y)), x), sigma, inplace=True)


class ConvSTBlock(nn.Module):
    """Plain 3x3 convolution followed by a soft threshold (LINN's P/U layers)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = _conv(channels, channels, 3, dilation)
        self.st = NoiseSoftThreshold(channels)

    def forward(self, x, sigma):
        return self.st(self.conv(x), sigma, inplace=True)


class PUNet(nn.Module):
    """Predictor or updater: conv + soft threshold, ``layers`` blocks, and an output conv.

    The output conv starts at zero, so an untrained lifting step is the identity.
    """

    def __init__(self, cin: int, cout: int, channels: int, layers: int, kind: str, dilation: int):
        super().__init__()
        self.conv_in = _conv(cin, channels, 3, dilation)
        self.st_in = NoiseSoftThreshold(channels)
        block = ResSepBlock if kind == "sep" else ConvSTBlock
        self.blocks = nn.ModuleList(block(channels, dilation) for _ in range(layers))
        self.conv_out = _conv(channels, cout, 3, dilation)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, x, sigma):
        y = self.st_in(self.conv_in(x), sigma, inplace=True)
        for block in self.blocks:
            y = block(y, sigma)
        return self.conv_out(y)


class LiftingStep(nn.Module):
    """One predictor/updater pair: ``d -= P(c)``, ``c += U(d)``; exactly invertible."""

    def __init__(self, n_coarse: int, n_detail: int, channels: int, layers: int, kind: str, dilation: int):
        super().__init__()
        self.predictor = PUNet(n_coarse, n_detail, channels, layers, kind, dilation)
        self.updater = PUNet(n_detail, n_coarse, channels, layers, kind, dilation)

    def forward(self, c, d, sigma):
        d = d - self.predictor(c, sigma)
        checkpoint()  # a Cancel need not wait for the rest of a step on a large tile
        c = c + self.updater(d, sigma)
        return c, d

    def inverse(self, c, d, sigma):
        c = c - self.updater(d, sigma)
        checkpoint()
        d = d + self.predictor(c, sigma)
        return c, d


class LiftingTransform(nn.Module):
    """One scale of the invertible transform: split, then ``steps`` lifting steps."""

    def __init__(self, cfg: dict, dilation: int):
        super().__init__()
        self.split = UndecimatedSplit(cfg["block"], dilation, learnable=cfg["split"] == "learned")
        n_detail = self.split.n_bands - 1
        self.steps = nn.ModuleList(
            LiftingStep(1, n_detail, cfg["channels"], cfg["layers"], cfg["pu"], dilation)
            for _ in range(cfg["steps"])
        )

    def forward(self, x, sigma):
        bands = self.split(x)
        c, d = bands[:, :1], bands[:, 1:]
        for i, step in enumerate(self.steps):
            c, d = step(c, d, sigma)
            checkpoint((i + 1) / len(self.steps))
        return c, d

    def inverse(self, c, d, sigma):
        for i, step in enumerate(reversed(self.steps)):
            c, d = step.inverse(c, d, sigma)
            checkpoint((i + 1) / len(self.steps))
        return self.split.inverse(torch.cat([c, d], 1))


# ------------------------------------------------------------------------------ detail denoisers
class DetailSoftThreshold(nn.Module):
    """Closed-form solution of ``min_g ||z_d - g||^2 / (2 sigma^2) + lambda ||g||_1``."""

    def __init__(self, bands: int, **_):
        super().__init__()
        # start as classical shrinkage of an orthonormal transform: threshold ~2 noise std
        self.st = NoiseSoftThreshold(bands, init=DETAIL_THRESHOLD_INIT)

    def forward(self, d, sigma):
        return self.st(d, sigma)

    def regulariser(self):
        return None


class DetailLISTA(nn.Module):
    """Learned ISTA for the over-parameterised problem ``min_g ||z_d - S*g||^2/(2 sigma^2) + lambda ||g||_1``.

    Analysis ``A`` and synthesis ``S`` are 3x3 convolutions; ``iters`` unrolled iterations with
    noise-adaptive thresholds.  ``regulariser()`` keeps ``S*A`` close to the identity, so the
    block is a near-identity on sparse signals.
    """

    def __init__(self, bands: int, channels: int = 48, iters: int = 3):
        super().__init__()
        self.analysis = _conv(bands, channels, 3, 1)
        self.synthesis = _conv(channels, bands, 3, 1)
        with torch.no_grad():
            # start near classical shrinkage: the first `bands` atoms are the identity, the others
            # small random filters, and S = A^T; so S*A ~ I and the block is a soft threshold
            self.analysis.weight.mul_(0.05)
            idx = torch.arange(min(bands, channels))
            self.analysis.weight[idx, idx, 1, 1] = 1.0
            self.synthesis.weight.copy_(torch.flip(self.analysis.weight, [2, 3]).transpose(0, 1))
        self.thresholds = nn.ModuleList(
            NoiseSoftThreshold(channels, init=DETAIL_THRESHOLD_INIT) for _ in range(iters)
        )

    def forward(self, d, sigma):
        g = self.thresholds[0](self.analysis(d), sigma, inplace=True)
        for st in self.thresholds[1:]:
            checkpoint()
            g = st(_add(self.analysis(d - self.synthesis(g)), g), sigma, inplace=True)
        return self.synthesis(g)

    def regulariser(self):
        # composite kernel of S after A (a 5x5 conv, bands x bands); identity at the centre
        composite = F.conv2d(
            self.analysis.weight.transpose(0, 1), torch.flip(self.synthesis.weight, [2, 3]), padding=2
        ).transpose(0, 1)
        eye = torch.zeros_like(composite)
        idx = torch.arange(composite.shape[0])
        eye[idx, idx, 2, 2] = 1.0
        return ((composite - eye) ** 2).sum()


# ---------------------------------------------------------------------------------- the denoiser
class InvertibleDenoiser(nn.Module):
    """LINN / WINNet denoiser: invertible transform, detail-band denoising, exact inverse.

    Parameters
    ----------
    **config
        ``split`` ("haar", "dct", "learned"), ``block``, ``levels`` (1 or 2 scales), ``steps``
        (lifting steps per scale), ``channels``, ``layers``, ``pu`` ("sep" for WINNet's separable
        residual blocks, "conv" for LINN's plain conv layers), ``detail`` ("st" or "lista"),
        ``lista_channels``, ``lista_iters``.
    """

    def __init__(self, **config):
        super().__init__()
        base = PRESETS["winnet"] if config.get("pu", "sep") == "sep" else PRESETS["linn"]
        self.config = {**base, **config}
        cfg = self.config
        if cfg["levels"] not in (1, 2):
            raise ValueError("levels must be 1 or 2")
        # second scale: a trous (dilation 2) on the coarse band of the first
        self.transforms = nn.ModuleList(LiftingTransform(cfg, 2**lvl) for lvl in range(cfg["levels"]))
        n_detail = cfg["block"] ** 2 - 1
        detail_cls = DetailLISTA if cfg["detail"] == "lista" else DetailSoftThreshold
        self.detail_denoisers = nn.ModuleList(
            detail_cls(n_detail, channels=cfg["lista_channels"], iters=cfg["lista_iters"])
            for _ in range(cfg["levels"])
        )

    @staticmethod
    def _sigma(sigma, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        return sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.reshape(-1)

    def transform(self, x, sigma):
        """Forward transform: list of ``(coarse, detail)`` per scale (the last coarse is kept)."""
        sigma = self._sigma(sigma, x)
        out = []
        c = x
        for lvl, t in enumerate(self.transforms):
            with progress_span(lvl / len(self.transforms), (lvl + 1) / len(self.transforms)):
                c, d = t(c, sigma)
            out.append((c, d))
        return out

    def inverse_transform(self, coeffs, sigma):
        """Backward pass of :meth:`transform` (exact inverse for any weights)."""
        sigma = self._sigma(sigma, coeffs[0][0])
        c = coeffs[-1][0]
        n = len(self.transforms)
        for lvl in reversed(range(n)):
            with progress_span((n - 1 - lvl) / n, (n - lvl) / n):
                c = self.transforms[lvl].inverse(c, coeffs[lvl][1], sigma)
        return c

    def for_inference(self) -> "InvertibleDenoiser":
        """Eval mode with the channels-last memory layout: the same results (to rounding), about
        twice as fast on a CPU because the depthwise convolutions then take oneDNN's fast path."""
        self.eval()
        self.to(memory_format=torch.channels_last)
        self._channels_last = True
        return self

    def forward(self, x, sigma, return_bands: bool = False):
        if getattr(self, "_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        sigma = self._sigma(sigma, x)
        # forward and backward passes cost the same: each is half of this call's progress
        with progress_span(0.0, 0.5):
            coeffs = self.transform(x, sigma)
        cleaned = [(c, dn(d, sigma)) for (c, d), dn in zip(coeffs, self.detail_denoisers)]
        with progress_span(0.5, 1.0):
            out = self.inverse_transform(cleaned, sigma).contiguous()
        if return_bands:
            return out, [d.contiguous() for _, d in coeffs], [d.contiguous() for _, d in cleaned]
        return out

    def regulariser(self):
        terms = [r for r in (dn.regulariser() for dn in self.detail_denoisers) if r is not None]
        return sum(terms) if terms else None

    def receptive_radius(self) -> int:
        """Pixels of context one output pixel depends on (a safe upper bound), for tiling halos."""
        cfg = self.config
        radius = 0
        for lvl in range(cfg["levels"]):
            dil = 2**lvl
            per_block = 2 if cfg["pu"] == "sep" else 1
            pu = (2 + per_block * cfg["layers"]) * dil
            split = (cfg["block"] - 1) * dil
            radius += 2 * (split + 2 * pu * cfg["steps"])  # forward and backward pass
        if cfg["detail"] == "lista":
            radius += 2 * cfg["lista_iters"] * cfg["levels"]
        return radius


# ------------------------------------------------------------------------------------- NENet
class NENet(nn.Module):
    """Noise-level estimation network (learned patch selection + PCA).

    Overlapping ``patch x patch`` patches are scored by a small 1D conv net (a weight in (0, 1)
    each); the noise variance is the smallest eigenvalue of the weighted covariance of the patches,
    since noise spreads evenly over all directions while image structure does not (flat patches get
    the large weights).  Returns sigma in 8-bit units for an image in [0, 1].

    With few patches (small images) the smallest sample eigenvalue is biased low;
    ``edge_correction`` divides by the Marchenko-Pastur edge factor ``(1 - sqrt(m/n))^2``.  The
    shipped estimator does not use it (it was measured less accurate on full-size images).
    """

    def __init__(self, patch: int = 8, stride: int = 3, channels: int = 16, layers: int = 4,
                 edge_correction: bool = False):
        super().__init__()
        self.patch, self.stride = patch, stride
        self.edge_correction = bool(edge_correction)
        mods: list[nn.Module] = [nn.Conv1d(1, channels, 3), nn.ReLU()]
        for _ in range(layers):
            mods += [nn.Conv1d(channels, channels, 3), nn.ReLU()]
        mods += [nn.Conv1d(channels, 1, 3)]
        self.scorer = nn.Sequential(*mods)
        self.config = dict(patch=patch, stride=stride, channels=channels, layers=layers,
                           edge_correction=self.edge_correction)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``img``: (B, 1, H, W) in [0, 1]; returns sigma (B,) in 0..255 units."""
        patches = F.unfold(img, self.patch, stride=self.stride).transpose(1, 2)  # (B, N, p*p)
        b, n, m = patches.shape
        # score on the sorted, mean-removed patch values: invariant to where the structure sits
        centred = patches - patches.mean(-1, keepdim=True)
        ordered = centred.sort(-1).values.reshape(b * n, 1, m) * 10.0
        w = torch.sigmoid(self.scorer(ordered).mean(-1)).reshape(b, n, 1)
        wsum = w.sum(1, keepdim=True).clamp_min(1e-6)
        mean = (w * patches).sum(1, keepdim=True) / wsum
        dev = patches - mean
        cov = (dev * w).transpose(1, 2) @ dev / wsum
        cov = cov.double()
        lam = torch.linalg.eigvalsh(cov)[:, 0].clamp_min(0.0)
        if not self.edge_correction:
            return (lam.sqrt() * 255.0).to(img.dtype)
        # the smallest eigenvalue of a sample covariance of n patches in m dimensions underestimates
        # the noise variance by about (1 - sqrt(m / n))^2 (Marchenko-Pastur edge); n = effective count
        n_eff = (wsum[:, 0, 0] ** 2 / (w[..., 0] ** 2).sum(1).clamp_min(1e-12)).double()
        edge = (1.0 - torch.sqrt(m / n_eff.clamp_min(4.0 * m))) ** 2
        return ((lam / edge).sqrt() * 255.0).to(img.dtype)


def self_ensemble(net, x: torch.Tensor, sigma) -> torch.Tensor:
    """Mean of ``net`` over the 8 flips and 90-degree rotations of ``x`` (N, C, H, W), each undone.

    The networks are not rotation-equivariant, so their errors on the 8 views are partly
    independent and averaging lowers them (about +0.1 dB on Set12) at 8 times the cost.  The
    result is exactly equivariant: transposing or rotating the input does the same to the output.
    """
    total = None
    for turns in range(4):
        for flip in (False, True):
            view = torch.rot90(x, turns, (-2, -1))
            if flip:
                view = torch.flip(view, (-1,))
            k = 2 * turns + flip
            with progress_span(k / 8, (k + 1) / 8):
                y = net(view, sigma)
            if flip:
                y = torch.flip(y, (-1,))
            y = torch.rot90(y, -turns, (-2, -1))
            total = y if total is None else total.add_(y)
    return total.div_(8)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class DnCNN(nn.Module):
    """DnCNN-17 (Zhang et al. 2017), used only as the speed yardstick in the benchmark."""

    def __init__(self, depth: int = 17, channels: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(channels, 1, 3, padding=1, bias=False)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)
