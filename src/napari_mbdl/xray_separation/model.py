"""The unfolded separation network and its self-supervised losses (torch; imported lazily).

Model (slides "X-ray Separation - Proposed Sparsity Model" / "Exclusion Loss")::

    min_{y1, y2, z1, z2}  ||x - Psi*y1 - Psi*y2||^2
                        + tau  sum_s ||y_s - sum_k Theta_k * z_{s,k}||^2      (shared dictionary Theta)
                        + gamma sum_s sum_c ||r_{s,c} - Phi_c * y_s||^2         (RGB side information)
                        + lambda sum_s ||z_s||_1                                (sparse codes)
                        + sum_i mu_i ||(W_i*y1) . (W_i*y2)||_1                  (exclusion, Haar frame)

One layer of the network is one pass of the proximal-gradient (ISTA-like) solver of this problem:
a shrinkage step on the sparse codes of each side, a gradient step on each side's image (mixture
fit, coupling to its codes, consistency with its RGB when that side has one), then, optionally,
the exclusion proximal step, which soft-thresholds one side's undecimated Haar coefficients by an
amount proportional to the other side's coefficients (the proximal map of ``mu |a| |b|`` in
``a``).  By default the exclusion term acts through the training loss only
(:func:`gradient_exclusion`), as in the paper's self-supervised training: on the tuning panels
the step in the layers made the separation worse.  All operators (Theta, its adjoint step, Psi,
Phi, thresholds, step sizes) are learned, per layer.

Side 1 starts from an "X-ray rendering" of its RGB photograph (the least-squares grey-level
mapping fitted to the mixture, a small learned per-pixel correction and a learned blur) and side 2
from what that leaves of the mixture.  With both photographs each side starts from its own
rendering, and what the two renderings leave of the mixture (the rest) is shared between the
sides by the exclusion principle: at each pixel in proportion to the local edge energy of each
side's rendering (:func:`edge_share`), so that the rest's edges go where that side already has
its edges rather than half to each side, which would put them in both.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from napari_mbdl.engine.progress import checkpoint


def soft_threshold(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Proximal map of ``threshold * |.|``: shrink towards zero by ``threshold``."""
    return torch.sign(values) * F.relu(values.abs() - threshold)


class HaarFrame(nn.Module):
    """Undecimated 2-D Haar frame (4 filters, stride 1); its frame operator is 4 x identity."""

    def __init__(self) -> None:
        super().__init__()
        low = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
        high = torch.tensor([1.0, -1.0]) / math.sqrt(2.0)
        filters = torch.stack(
            [torch.outer(a, b) for a in (low, high) for b in (low, high)]
        ).unsqueeze(1)  # (4, 1, 2, 2)
        self.register_buffer("filters", filters, persistent=False)

    def analysis(self, image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(image, (0, 1, 0, 1)), self.filters)

    def synthesis(self, coefficients: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(coefficients, self.filters)[..., :-1, :-1] / 4.0


class SeparationLayer(nn.Module):
    """One unfolded iteration of the proximal-gradient solver (see the module docstring)."""

    def __init__(self, n_atoms: int, kernel_size: int, side_info: tuple[bool, bool],
                 exclusion_step: bool = False) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.exclusion_step = exclusion_step

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size, padding=pad, bias=False)

        self.side_info = side_info
        self.analysis = conv(1, n_atoms)  # step along Theta^T (learned, as in LISTA)
        self.dictionary = conv(n_atoms, 1)  # Theta, shared by the two sides
        self.mixing_adjoint = conv(1, 1)  # step along Psi^T
        self.mixing = conv(1, 1)  # Psi
        self.rgb_adjoint = nn.ModuleList([conv(3, 1) for _ in range(2)])  # step along Phi^T, per side
        self.rgb = nn.ModuleList([conv(1, 3) for _ in range(2)])  # Phi, per side
        self.code_threshold = nn.Parameter(torch.full((2, n_atoms), -5.0))  # softplus -> ~0.007
        self.exclusion = nn.Parameter(torch.full((4,), -2.0))  # softplus -> mu ~ 0.13 per Haar band
        self.coupling = nn.Parameter(torch.tensor(-2.0))  # sigmoid -> tau ~ 0.12
        self.haar = HaarFrame()
        # Start close to a no-op, so the untrained network returns its initialisation (the fitted
        # grey-level mapping): atom 0 is a delta (Theta z ~ y), the other atoms are small and
        # random, and the RGB step's adjoint starts at zero (its forward map Phi is random so
        # that both receive gradients).
        for module in (self.analysis, self.dictionary, self.rgb):
            for parameter in module.parameters():
                nn.init.normal_(parameter, std=0.01)
        with torch.no_grad():
            self.analysis.weight[0, 0, pad, pad] = 1.0
            self.dictionary.weight[0, 0, pad, pad] = 1.0
        for module in self.rgb_adjoint:
            nn.init.zeros_(module.weight)
        # Psi starts as the identity and its adjoint step as a half step.
        for module, value in ((self.mixing, 1.0), (self.mixing_adjoint, 0.5)):
            nn.init.zeros_(module.weight)
            with torch.no_grad():
                module.weight[0, 0, pad, pad] = value

    def _exclude(self, image: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Exclusion prox: shrink ``image``'s Haar coefficients where ``other`` has edges."""
        coefficients = self.haar.analysis(image)
        threshold = F.softplus(self.exclusion).view(1, 4, 1, 1) * self.haar.analysis(other).abs()
        # y + W^T (soft(Wy) - Wy) / 4: exactly y where nothing is shrunk (also at the borders)
        return image + self.haar.synthesis(soft_threshold(coefficients, threshold) - coefficients)

    def forward(self, x, rgbs, ys, zs):
        new_z = []
        for side in range(2):
            threshold = F.softplus(self.code_threshold[side]).view(1, -1, 1, 1)
            z = zs[side] + self.analysis(ys[side] - self.dictionary(zs[side]))
            new_z.append(soft_threshold(z, threshold))
        residual = x - self.mixing(ys[0]) - self.mixing(ys[1])
        tau = torch.sigmoid(self.coupling)
        new_y = []
        for side in range(2):
            y = ys[side] + self.mixing_adjoint(residual) + tau * (self.dictionary(new_z[side]) - ys[side])
            if self.side_info[side]:
                y = y + self.rgb_adjoint[side](rgbs[side] - self.rgb[side](ys[side]))
            new_y.append(y)
        if not self.exclusion_step:
            return new_y, new_z
        y2 = self._exclude(new_y[1], new_y[0])
        y1 = self._exclude(new_y[0], y2)
        return [y1, y2], new_z


#: Gaussian (standard deviation, pixels) that averages the edge energy of :func:`edge_share`
EDGE_SHARE_SIGMA = 1.0
#: pixels of context :func:`edge_share` adds (central difference + Gaussian truncated at 3 sigma)
EDGE_SHARE_RADIUS = 1 + int(math.ceil(3 * EDGE_SHARE_SIGMA))


def edge_energy(image: torch.Tensor) -> torch.Tensor:
    """Squared gradient magnitude (central differences), averaged by a small Gaussian.

    Zero padding, like every convolution of the network, so that a tile with its halo computes
    exactly what the whole image does.
    """
    difference = image.new_tensor([-0.5, 0.0, 0.5])
    gy = F.conv2d(image, difference.view(1, 1, 3, 1), padding=(1, 0))
    gx = F.conv2d(image, difference.view(1, 1, 1, 3), padding=(0, 1))
    radius = EDGE_SHARE_RADIUS - 1
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    gauss = torch.exp(-0.5 * (offsets / EDGE_SHARE_SIGMA) ** 2)
    gauss = gauss / gauss.sum()
    energy = gy.square() + gx.square()
    energy = F.conv2d(energy, gauss.view(1, 1, -1, 1), padding=(radius, 0))
    return F.conv2d(energy, gauss.view(1, 1, 1, -1), padding=(0, radius))


def edge_share(rendering1: torch.Tensor, rendering2: torch.Tensor, floor: torch.Tensor | float) -> torch.Tensor:
    """Side 1's share (0..1, per pixel) of what two renderings leave of the mixture.

    The exclusion principle: the two sides' edges should not coincide, so an edge in the rest
    belongs to the side that has its edges there.  The share is ``(e1 + f) / (e1 + e2 + 2 f)``
    with ``e`` each rendering's local edge energy (:func:`edge_energy`) and ``f`` a floor (the
    painting's mean edge energy), so flat areas of both sides get half each.
    """
    e1, e2 = edge_energy(rendering1), edge_energy(rendering2)
    floor = floor + 1e-12  # two flat renderings: half each, not 0 / 0
    return (e1 + floor) / (e1 + e2 + 2 * floor)


def _interior(image: torch.Tensor, margin: int) -> torch.Tensor:
    """``image`` (..., H, W) without ``margin`` pixels on each side (where zero padding shows), if
    it is large enough to keep something (a patch no larger than twice the margin is kept whole)."""
    height, width = image.shape[-2:]
    my = margin if height > 2 * margin else 0
    mx = margin if width > 2 * margin else 0
    return image[..., my:height - my, mx:width - mx]


class PixelRendering(nn.Module):
    """X-ray rendering of an RGB photograph: fitted linear grey map + learned per-pixel
    non-linear correction, then a learned blur (a radiograph is less sharp than a photograph)."""

    def __init__(self, kernel_size: int = 5, hidden: int = 16) -> None:
        super().__init__()
        self.correction = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.Tanh(), nn.Conv2d(hidden, 1, 1))
        nn.init.zeros_(self.correction[2].weight)
        nn.init.zeros_(self.correction[2].bias)
        self.blur = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.zeros_(self.blur.weight)
        with torch.no_grad():
            self.blur.weight[0, 0, kernel_size // 2, kernel_size // 2] = 1.0

    def forward(self, rgb: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
        return self.blur(linear + self.correction(rgb - 0.5))


class UnfoldedSeparator(nn.Module):
    """The analysis network (unfolded solver) plus the renderings used by the losses.

    Parameters
    ----------
    n_layers : int
        Unfolded iterations.
    n_atoms : int
        Atoms of the shared convolutional dictionary.
    kernel_size : int
        Size of every learned convolution (odd).
    two_sided : bool
        Whether an RGB photograph of side 2 is given as well.
    exclusion_step : bool
        Whether each layer ends with the exclusion proximal step (by default the exclusion term
        acts through the training loss only).
    exclusion_split : bool
        With two photographs: share what the renderings leave of the mixture by the sides' edge
        energy (:func:`edge_share`); False shares it half and half.  Its floor, the buffer
        ``split_floor``, is set from the painting by :meth:`set_split_floor`.
    """

    def __init__(self, n_layers: int = 4, n_atoms: int = 16, kernel_size: int = 5, two_sided: bool = False,
                 exclusion_step: bool = False, exclusion_split: bool = False):
        super().__init__()
        self.exclusion_split = exclusion_split and two_sided
        self.register_buffer("split_floor", torch.tensor(0.0))
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")
        self.n_layers, self.n_atoms, self.kernel_size, self.two_sided = n_layers, n_atoms, kernel_size, two_sided
        side_info = (True, two_sided)
        self.layers = nn.ModuleList([SeparationLayer(n_atoms, kernel_size, side_info, exclusion_step)
                                     for _ in range(n_layers)])
        self.rendering = nn.ModuleList([PixelRendering(kernel_size) for _ in range(2 if two_sided else 1)])
        self.synthesis = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)  # Psi at the output
        nn.init.zeros_(self.synthesis.weight)
        with torch.no_grad():
            self.synthesis.weight[0, 0, kernel_size // 2, kernel_size // 2] = 1.0

    def render(self, rgb1, linear1, rgb2=None, linear2=None) -> list[torch.Tensor]:
        """X-ray renderings of the photographs (kept for the losses of the current batch)."""
        self._renderings = [self.rendering[0](rgb1, linear1)]
        if self.two_sided:
            self._renderings.append(self.rendering[1](rgb2, linear2))
        return self._renderings

    @staticmethod
    def receptive_radius(n_layers: int, kernel_size: int, exclusion_split: bool = False) -> int:
        """Pixels of context one output pixel depends on (an upper bound), for tiled inference."""
        r = kernel_size // 2
        return n_layers * (3 * r + 4) + 2 * r + (EDGE_SHARE_RADIUS if exclusion_split else 0)

    def set_split_floor(self, rgb1, linear1, rgb2, linear2) -> None:
        """Set the floor of :func:`edge_share` to the mean edge energy of the two renderings of
        these patches (a sample of the painting), so that the share is the same for every tile.

        The patches' outer ``EDGE_SHARE_RADIUS`` pixels are left out of the mean: there the zero
        padding makes a false edge that the painting does not have.
        """
        with torch.no_grad():
            renderings = self.render(rgb1, linear1, rgb2, linear2)
            energies = [_interior(edge_energy(r), EDGE_SHARE_RADIUS) for r in renderings]
            self.split_floor.fill_(0.5 * float(sum(e.mean() for e in energies)))

    def forward(self, x: torch.Tensor, rgb1: torch.Tensor, linear1: torch.Tensor,
                rgb2: torch.Tensor | None = None, linear2: torch.Tensor | None = None):
        """Separate a batch.

        Parameters
        ----------
        x : tensor (B, 1, H, W)
            Normalised mixture.
        rgb1, rgb2 : tensor (B, 3, H, W)
            Photographs (rgb2 only when ``two_sided``).
        linear1, linear2 : tensor (B, 1, H, W)
            The fitted linear grey mapping of each photograph.

        Returns
        -------
        x1, x2 : tensor (B, 1, H, W)
            The two separated X-ray images.
        """
        # Each side starts as its photograph's rendering; side 2 without a photograph as what
        # side 1 leaves of the mixture.  With two renderings, what neither explains is shared by
        # edge energy (or equally), so the start re-synthesises the mixture exactly either way.
        renderings = self.render(rgb1, linear1, rgb2, linear2)
        if self.two_sided:
            rest = x - renderings[0] - renderings[1]
            share = edge_share(*renderings, self.split_floor) if self.exclusion_split else 0.5
            y1, y2 = renderings[0] + share * rest, renderings[1] + (1 - share) * rest
        else:
            y1 = renderings[0]
            y2 = x - y1
            rgb2 = torch.zeros_like(rgb1)
        self._start = (y1, y2)  # kept for the level convention (training._side2_offset)
        batch, _, height, width = x.shape
        zeros = x.new_zeros(batch, self.n_atoms, height, width)
        ys, zs = [y1, y2], [zeros, zeros]
        for k, layer in enumerate(self.layers):
            ys, zs = layer(x, [rgb1, rgb2], ys, zs)
            checkpoint((k + 1) / len(self.layers))
        self._codes = zs  # kept for the sparsity loss of the current batch
        return self.synthesis(ys[0]), self.synthesis(ys[1])


def gradient_exclusion(x1: torch.Tensor, x2: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Exclusion loss: edges of the two images should not coincide (multi-scale gradients).

    At each scale the horizontal and vertical differences of each image are squashed by ``tanh``
    after scaling each image's gradients to a common magnitude, so the loss measures where edges
    co-occur rather than how strong they are; their product is averaged.
    """
    total = x1.new_zeros(())
    for level in range(levels):
        for axis in (2, 3):
            g1 = torch.diff(x1, dim=axis)
            g2 = torch.diff(x2, dim=axis)
            s1 = g1.abs().mean().clamp_min(1e-6)
            s2 = g2.abs().mean().clamp_min(1e-6)
            total = total + (torch.tanh(g1 / s1).square() * torch.tanh(g2 / s2).square()).mean().sqrt()
        if level + 1 < levels:
            x1, x2 = F.avg_pool2d(x1, 2), F.avg_pool2d(x2, 2)
    return total / (2 * levels)


def rendering_loss(model: UnfoldedSeparator, x, *, scales: int, intensity_weight: float,
                   border: int = 0) -> torch.Tensor:
    """The photographs' renderings (of the batch just separated) must re-synthesise the mixture.

    A hidden side is painted independently of the other side's photograph, so the best prediction
    of the mixture from photograph 1 alone is side 1's X-ray plus a constant: fitting the rendering
    by regression on the mixture recovers side 1 without any truth (with both photographs, the sum
    of the two renderings is fitted).  In that regression the hidden side acts as noise, and its
    chance resemblance to photograph 1 lies mostly at low spatial frequencies (natural images have
    most of their power there), so the fit compares *gradients*, at ``scales`` scales, which
    whitens that noise; a small ``intensity_weight`` on the plain difference still ties colours
    that occur only in flat areas.  ``scales=0`` compares the plain difference alone (right when
    both photographs are given: then only detector noise is left, and it is white).  Constants
    are settled afterwards by the level convention.
    """
    rendered, x = _interior(sum(model._renderings), border), _interior(x, border)
    if scales == 0:
        return F.mse_loss(rendered, x)
    total = intensity_weight * F.mse_loss(rendered, x)
    for scale in range(scales):
        if scale:
            rendered, x = F.avg_pool2d(rendered, 2), F.avg_pool2d(x, 2)
        total = total + sum(F.mse_loss(torch.diff(rendered, dim=axis), torch.diff(x, dim=axis)) for axis in (2, 3))
    return total


def separation_losses(model: UnfoldedSeparator, x, x1, x2, border: int = 0):
    """The self-supervised losses of the batch just separated (dict of scalar tensors, unweighted).

    ``resynthesis``: the two sides must add up to the measured mixture.  ``rgb``: a side with a
    photograph must be what its photograph renders to (the side and its photograph share their
    sparse codes, so the side's X-ray is a function of the photograph).  ``exclusion``: the two
    sides' edges must not coincide.  ``sparsity``: l1 of the codes.  ``border`` pixels of each
    patch are left out (they see zero padding the whole image does not).
    """
    def inner(image):
        return _interior(image, border)

    losses = {
        "resynthesis": F.mse_loss(inner(x1 + x2), inner(x)),
        "rgb": sum(F.mse_loss(inner(side), inner(rendering))
                   for side, rendering in zip((x1, x2), model._renderings)),
        "exclusion": gradient_exclusion(inner(x1), inner(x2)),
        "sparsity": sum(z.abs().mean() for z in model._codes),
    }
    return losses
