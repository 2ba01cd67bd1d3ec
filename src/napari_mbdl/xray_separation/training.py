"""Self-supervised training of the unfolded separator on the painting itself (patch-based).

numpy-only helpers (normalisation, grey-level mapping) are at the top; torch is imported inside
the functions that need it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from napari_mbdl.engine import InputError, Progress


@dataclass(frozen=True)
class SeparationConfig:
    """Settings of the network and of its self-supervised training.

    Attributes
    ----------
    iterations : int
        Training iterations (Adam steps on a batch of patches).
    max_minutes : float or None
        Stop training after this wall time even if iterations remain.
    n_layers, n_atoms, kernel_size : int
        Unfolded iterations, dictionary atoms, convolution size.
    patch_size, batch_size : int
        Training patches (square) per Adam step.
    learning_rate : float
        Adam step size.
    weight_rgb, weight_exclusion, weight_sparsity : float
        Weights of the RGB-consistency, exclusion and sparsity losses (re-synthesis has weight 1).
        ``weight_exclusion`` None means :attr:`AUTO_EXCLUSION`: 0.005 with one photograph, 0 with
        two (on the tuning panels the exclusion loss helped with one photograph, by far, and gave
        no consistent gain with two, where the exclusion acts through ``exclusion_split``).
    exclusion_split : bool
        With two photographs, share what the two renderings leave of the mixture between the sides
        by their edge energy (the exclusion principle; see
        :func:`~napari_mbdl.xray_separation.model.edge_share`) instead of half and half.  On the
        tuning panels this improved the start's structure by +0.7 to +2.9 dB (docs/xray.md).  It is off when
        ``weight_exclusion`` is 0: that is the model without its exclusion term.
    exclusion_step : bool
        Whether the network's layers end with the exclusion proximal step (the exclusion term of
        the sparsity model inside the network, on top of the exclusion loss).  Off by default: on
        the tuning panels, with one photograph, the exclusion loss alone separated better than
        loss and step together, and with two the step made the structure worse on every panel.
    rendering_iterations : int
        Adam steps that first fit the photographs' renderings alone to the mixture (cheap: the
        renderings are per-pixel maps and a blur), so the unfolded network starts from them.
    rendering_scales : int or None
        That fit compares gradients at this many scales (0: plain differences; see
        :func:`~napari_mbdl.xray_separation.model.rendering_loss`).  None means
        :attr:`AUTO_RENDERING_SCALES`: 2 with one photograph (the hidden side is the regression's
        noise, and gradients whiten it), 0 with two (only white detector noise is left).
    rendering_intensity_weight : float
        Weight of the plain difference in that fit when it compares gradients.
    preview_every : int
        Evaluate, keep the best state and send a preview every this many iterations.
    seed : int
        Seed of the initialisation and of the patch sampling.
    """

    iterations: int = 300
    max_minutes: float | None = None
    n_layers: int = 4
    n_atoms: int = 16
    kernel_size: int = 5
    patch_size: int = 48
    batch_size: int = 4
    learning_rate: float = 2e-3
    weight_rgb: float = 1.0
    weight_exclusion: float | None = None
    weight_sparsity: float = 1e-4
    preview_every: int = 25
    exclusion_step: bool = False
    exclusion_split: bool = True
    rendering_iterations: int = 1000
    rendering_scales: int | None = None
    rendering_intensity_weight: float = 0.02
    seed: int = 0

    #: exclusion weight used when ``weight_exclusion`` is None, by number of photographs
    AUTO_EXCLUSION = {1: 0.005, 2: 0.0}

    #: scales of the rendering fit used when ``rendering_scales`` is None, by number of photographs
    AUTO_RENDERING_SCALES = {1: 2, 2: 0}

    def rendering_fit_scales(self, two_sided: bool) -> int:
        """The gradient scales of the rendering fit in effect (0: plain differences)."""
        if self.rendering_scales is None:
            return self.AUTO_RENDERING_SCALES[2 if two_sided else 1]
        return int(self.rendering_scales)

    def exclusion_weight(self, two_sided: bool) -> float:
        """The exclusion weight in effect (``weight_exclusion``, or the automatic choice)."""
        if self.weight_exclusion is None:
            return self.AUTO_EXCLUSION[2 if two_sided else 1]
        return float(self.weight_exclusion)

    def exclusion_split_in_effect(self, two_sided: bool) -> bool:
        """Whether the rest is shared by edge energy (two photographs, exclusion not switched off)."""
        return two_sided and self.exclusion_split and self.weight_exclusion != 0.0

    @property
    def halo(self) -> int:
        from napari_mbdl.xray_separation.model import UnfoldedSeparator

        # the split's context is counted whenever it may be used: the halo does not know the sides
        return UnfoldedSeparator.receptive_radius(self.n_layers, self.kernel_size, self.exclusion_split)


@dataclass
class Normalisation:
    """Maps the mixture to about [0, 1] and back; holds the fitted grey-level mappings."""

    low: float
    high: float
    mapping1: np.ndarray  # (4,) intercept + RGB weights (normalised units)
    mapping2: np.ndarray | None = None

    @property
    def span(self) -> float:
        return self.high - self.low


@dataclass
class TrainedSeparator:
    """What full-image inference needs: picklable numpy weights and the normalisation."""

    config: SeparationConfig
    two_sided: bool
    state: dict[str, np.ndarray]
    normalisation: Normalisation
    side2_offset: float = 0.0  # added to side 2 (taken from side 1), normalised units
    history: list[dict[str, float]] = field(default_factory=list)
    iterations_done: int = 0
    stopped_early: bool = False
    #: the training iteration whose network is kept (lowest evaluation loss); 0 means that no
    #: training step improved on the start, the photographs' renderings fitted to the mixture
    best_iteration: int = 0

    def summary(self) -> str:
        """One line for the user: how long it trained and which network is kept."""
        text = f"trained {self.iterations_done} iterations"
        if self.stopped_early:
            text += " (stopped early)"
        losses = {h["iteration"]: h["loss"] for h in self.history}
        loss = f" (loss {losses[self.best_iteration]:.5f})" if self.best_iteration in losses else ""
        if self.best_iteration > 0:
            return text + f"; kept the network of iteration {self.best_iteration}{loss}"
        if self.iterations_done > 0:
            return text + f"; no step improved on the fitted renderings, which are kept{loss}"
        return text + f"; separated with the fitted renderings{loss}"


def _subsample(array, step: int) -> np.ndarray:
    return np.asarray(array[::step, ::step], dtype=np.float64)


def fit_normalisation(mixed, rgb1, rgb2=None, max_pixels: int = 1_000_000) -> Normalisation:
    """Robust intensity range of the mixture and least-squares grey mappings of the photographs.

    The mixture is fitted as ``a + b . rgb1`` (one side) or ``a + b . rgb1 + c . rgb2`` (two sides)
    on a regular subsample of pixels.  The constant goes to side 1, and side 2's darkest 1% is put
    at zero (the mixture fixes only the sum of the sides, so some convention is needed).
    """
    height, width = mixed.shape
    step = max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))
    x = _subsample(mixed, step)
    low, high = np.percentile(x, [0.5, 99.5])
    if not high > low:
        raise InputError("the mixed X-ray image is constant; there is nothing to separate")
    xn = ((x - low) / (high - low)).ravel()
    columns = [np.ones_like(xn)]
    sides = [rgb1] if rgb2 is None else [rgb1, rgb2]
    for rgb in sides:
        sub = _subsample(rgb, step).reshape(-1, 3)
        columns.extend(sub.T)
    design = np.stack(columns, axis=1)
    coefficients, *_ = np.linalg.lstsq(design, xn, rcond=None)
    mapping1 = coefficients[:4].astype(np.float64)
    mapping2 = None
    if rgb2 is None:
        side2 = xn - design[:, :4] @ mapping1
    else:
        mapping2 = np.concatenate([[0.0], coefficients[4:7]])
        side2 = design[:, 4:7] @ mapping2[1:]
    # The mixture fixes only the sum of the sides, so a constant can be traded between them:
    # give the common level (support, ground) to side 1 and put side 2's darkest 1% at zero.
    floor = float(np.percentile(side2, 1.0))
    mapping1[0] += floor
    if mapping2 is not None:
        mapping2[0] -= floor
        mapping2 = mapping2.astype(np.float32)
    return Normalisation(float(low), float(high), mapping1.astype(np.float32), mapping2)


def grey_mapping(rgb: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Apply a fitted grey-level mapping ``a + b . rgb`` to an (..., 3) array."""
    return (mapping[0] + np.asarray(rgb, dtype=np.float32) @ mapping[1:]).astype(np.float32)


def prepare_tensors(mixed, rgb1, rgb2, normalisation: Normalisation, device: str):
    """numpy (B, H, W) / (B, H, W, 3) blocks -> the network's input tensors on ``device``."""
    import torch

    x = (np.asarray(mixed, dtype=np.float32) - normalisation.low) / normalisation.span
    rgb1 = np.asarray(rgb1, dtype=np.float32)
    tensors = {
        "x": torch.from_numpy(x[:, None]).to(device),
        "rgb1": torch.from_numpy(np.ascontiguousarray(rgb1.transpose(0, 3, 1, 2))).to(device),
        "linear1": torch.from_numpy(grey_mapping(rgb1, normalisation.mapping1)[:, None]).to(device),
    }
    if rgb2 is not None:
        rgb2 = np.asarray(rgb2, dtype=np.float32)
        tensors["rgb2"] = torch.from_numpy(np.ascontiguousarray(rgb2.transpose(0, 3, 1, 2))).to(device)
        tensors["linear2"] = torch.from_numpy(grey_mapping(rgb2, normalisation.mapping2)[:, None]).to(device)
    return tensors


def build_model(config: SeparationConfig, two_sided: bool):
    from napari_mbdl.xray_separation.model import UnfoldedSeparator

    return UnfoldedSeparator(config.n_layers, config.n_atoms, config.kernel_size, two_sided,
                             config.exclusion_step, config.exclusion_split_in_effect(two_sided))


def _read_patches(arrays, corners, size):
    """Stack patches (numpy) from array-likes (numpy, dask, zarr) at the given corners."""
    out = []
    for array in arrays:
        if array is None:
            out.append(None)
            continue
        out.append(np.stack([np.asarray(array[r : r + size[0], c : c + size[1]], dtype=np.float32)
                             for r, c in corners]))
    return out


def train_separator_steps(
    mixed,
    rgb1,
    rgb2=None,
    config: SeparationConfig = SeparationConfig(),
    device: str = "cpu",
    cancel=None,
    preview_shape: tuple[int, int] = (256, 256),
) -> Generator[Progress, None, TrainedSeparator]:
    """Train the separator on patches of this painting; yields Progress (with previews).

    Cancelling (``cancel.cancelled``) stops training and returns the best state so far.  The best
    state is the one with the lowest total loss on fixed evaluation patches (a lattice of
    ``EVALUATION_PATCH`` squares spread over the whole painting).

    Returns
    -------
    TrainedSeparator
    """
    import torch

    from napari_mbdl.xray_separation.model import separation_losses

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    two_sided = rgb2 is not None
    normalisation = fit_normalisation(mixed, rgb1, rgb2)
    model = build_model(config, two_sided).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(config.iterations, 1),
                                                          eta_min=config.learning_rate * 0.1)
    height, width = mixed.shape
    size = (min(config.patch_size, height), min(config.patch_size, width))
    arrays = (mixed, rgb1, rgb2)
    weights = {"resynthesis": 1.0, "rgb": config.weight_rgb, "exclusion": config.exclusion_weight(two_sided),
               "sparsity": config.weight_sparsity}
    # borders of patches see zero padding that the whole image does not: leave them out of the loss
    border = min(4, size[0] // 8, size[1] // 8)

    def random_corners(n):
        return list(zip(rng.integers(0, height - size[0] + 1, n), rng.integers(0, width - size[1] + 1, n)))

    def total_loss(batch_arrays):
        t = prepare_tensors(*batch_arrays, normalisation, device)
        x1, x2 = model(t["x"], t["rgb1"], t["linear1"], t.get("rgb2"), t.get("linear2"))
        parts = separation_losses(model, t["x"], x1, x2, border=border)
        return sum(weights[k] * v for k, v in parts.items()), parts

    # The network kept is judged on patches spread over the whole painting: a few random patches
    # made the choice follow their content (on a tuning panel it kept a network 2 dB worse than
    # its neighbours, whose whole-image exclusion loss was lower).
    evaluation = _read_patches(arrays, *_lattice(height, width, patch=EVALUATION_PATCH))
    # the preview: a centred crop of the painting, at most preview_shape
    ph, pw = min(preview_shape[0], height), min(preview_shape[1], width)
    top, left = (height - ph) // 2, (width - pw) // 2
    preview_arrays = _read_patches(arrays, [(top, left)], (ph, pw))

    def evaluate():
        model.eval()
        with torch.no_grad():
            loss, parts = total_loss(evaluation)
        model.train()
        return float(loss), {k: float(v) for k, v in parts.items()}

    def preview():
        model.eval()
        with torch.no_grad():
            t = prepare_tensors(*preview_arrays, normalisation, device)
            x1, x2 = model(t["x"], t["rgb1"], t["linear1"], t.get("rgb2"), t.get("linear2"))
        model.train()
        scale = normalisation.span
        return {"side1": x1[0, 0].cpu().numpy() * scale, "side2": x2[0, 0].cpu().numpy() * scale,
                "origin": (top, left)}

    if config.rendering_iterations > 0:
        yield from _fit_renderings(model, config, lambda n: _read_patches(arrays, random_corners(n), size),
                                   normalisation, device, border, cancel)
    if model.exclusion_split:
        lattice = _read_patches(arrays, *_lattice(height, width))
        t = prepare_tensors(*lattice, normalisation, device)
        model.set_split_floor(t["rgb1"], t["linear1"], t["rgb2"], t["linear2"])
    best_loss, parts = evaluate()
    best_state = copy.deepcopy(model.state_dict())
    best_iteration = 0
    history = [{"iteration": 0, "loss": best_loss, **parts}]
    start = time.monotonic()
    stopped_early = False
    done = 0
    yield Progress("training", 0, config.iterations, "starting from the renderings fitted to the mixture", preview())
    for iteration in range(1, config.iterations + 1):
        if cancel is not None and cancel.cancelled:
            stopped_early = True
            break
        if config.max_minutes is not None and time.monotonic() - start > 60.0 * config.max_minutes:
            stopped_early = True
            break
        batch = _read_patches(arrays, random_corners(config.batch_size), size)
        # random flips: the model should not depend on orientation (and it enlarges a small painting)
        if rng.random() < 0.5:
            batch = [None if b is None else b[:, :, ::-1].copy() for b in batch]
        if rng.random() < 0.5:
            batch = [None if b is None else b[:, ::-1].copy() for b in batch]
        loss, _ = total_loss(batch)
        if not torch.isfinite(loss):
            raise InputError("training diverged (non-finite loss); lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        done = iteration
        last = iteration == config.iterations
        if iteration % max(config.preview_every, 1) == 0 or last:
            value, parts = evaluate()
            history.append({"iteration": iteration, "loss": value, **parts})
            if value < best_loss:
                best_loss, best_state, best_iteration = value, copy.deepcopy(model.state_dict()), iteration
            model_preview = preview()
            yield Progress("training", iteration, config.iterations,
                           f"loss {value:.5f} (best {best_loss:.5f})", model_preview)
        elif iteration % 5 == 0:
            yield Progress("training", iteration, config.iterations, f"loss {float(loss.detach()):.5f}")
    model.load_state_dict(best_state)
    state = {k: v.detach().cpu().numpy().copy() for k, v in best_state.items()}
    trained = TrainedSeparator(config, two_sided, state, normalisation, history=history,
                               iterations_done=done, stopped_early=stopped_early, best_iteration=best_iteration)
    trained.side2_offset = _side2_offset(model, arrays, normalisation, device, config.halo)
    return trained


#: side of the evaluation patches (4 x 4 of them, spread over the painting; a 256 x 256 panel is
#: covered exactly)
EVALUATION_PATCH = 64


def _fit_renderings(model, config, read_batch, normalisation, device, border, cancel,
                    pool: int = 256) -> Generator[Progress, None, None]:
    """Fit the renderings alone to the mixture (see ``rendering_loss``) before the full training.

    Patches are read once into a pool (reading a large painting is the slow part) and each Adam
    step uses a random subset of it.  Yields Progress every 100 steps; stops when cancelled.
    """
    total = config.rendering_iterations
    yield Progress("training", 0, config.iterations, f"fitting the photographs' X-ray renderings (0/{total})")
    import torch

    from napari_mbdl.xray_separation.model import rendering_loss

    tensors = prepare_tensors(*read_batch(pool), normalisation, device)
    generator = torch.Generator().manual_seed(config.seed)
    parameters = list(model.rendering.parameters())
    optimiser = torch.optim.Adam(parameters, lr=5.0 * config.learning_rate)
    scales = config.rendering_fit_scales(model.two_sided)
    for step in range(1, total + 1):
        if cancel is not None and cancel.cancelled:
            return
        pick = torch.randperm(pool, generator=generator)[: 4 * config.batch_size].to(device)
        t = {k: v[pick] for k, v in tensors.items()}
        model.render(t["rgb1"], t["linear1"], t.get("rgb2"), t.get("linear2"))
        loss = rendering_loss(model, t["x"], scales=scales, intensity_weight=config.rendering_intensity_weight,
                              border=border)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 100 == 0:
            yield Progress("training", 0, config.iterations,
                           f"fitting the photographs' X-ray renderings ({step}/{total})")


def _lattice(height: int, width: int, grid: int = 4, patch: int = 128):
    """Corners and size of a ``grid`` x ``grid`` lattice of patches spread over the whole painting
    (a large painting is sampled everywhere, at a fixed cost)."""
    size = (min(patch, height), min(patch, width))
    rows = np.linspace(0, height - size[0], grid).round().astype(int)
    cols = np.linspace(0, width - size[1], grid).round().astype(int)
    return sorted({(int(r), int(c)) for r in rows for c in cols}), size


def _side2_offset(model, arrays, normalisation, device, halo: int) -> float:
    """Constant to move from side 1 to side 2 (normalised units).

    The mixture fixes only the *sum* of the two sides, so a constant can be traded between them
    (and training may drift one).  The convention gives the common level (support, ground) to
    side 1 and puts side 2's darkest 1% at zero.  The percentile is taken on side 2's start, before
    the unfolded layers (with one photograph, what side 1's fitted rendering leaves of the
    mixture; with two, side 2's rendering plus its share of what the renderings leave), and side
    2's mean is matched to it: a percentile of the network's output itself moves with how sharp
    its darkest details are.  (With two photographs, side 2's rendering alone missed part of its
    darkest content, which the rest holds: side 2 came out too dark, by 2 to 5% of its range on
    three tuning panels.)  Statistics are taken over a lattice of patches spread over the
    whole painting (:func:`_lattice`), each without the margin that sees zero padding.
    """
    import torch

    height, width = arrays[0].shape
    corners, size = _lattice(height, width)
    samples, starts = [], []
    model.eval()
    with torch.no_grad():
        for first in range(0, len(corners), 4):
            t = prepare_tensors(*_read_patches(arrays, corners[first : first + 4], size), normalisation, device)
            _, x2 = model(t["x"], t["rgb1"], t["linear1"], t.get("rgb2"), t.get("linear2"))
            x2 = x2[:, 0].cpu().numpy()
            begun = model._start[1][:, 0].cpu().numpy()
            for (r, c), block, side2_start in zip(corners[first : first + 4], x2, begun):
                # keep what the whole-image pass would compute the same: drop margins that are not
                # at the painting's own edge
                top = 0 if r == 0 else min(halo, size[0] // 4)
                bottom = size[0] if r + size[0] == height else size[0] - min(halo, size[0] // 4)
                left = 0 if c == 0 else min(halo, size[1] // 4)
                right = size[1] if c + size[1] == width else size[1] - min(halo, size[1] // 4)
                samples.append(block[top:bottom, left:right].ravel())
                starts.append(side2_start[top:bottom, left:right].ravel())
    side2 = np.concatenate(samples)
    start = np.concatenate(starts)
    return float(start.mean() - np.percentile(start, 1.0) - side2.mean())


def load_model(trained: TrainedSeparator, device: str):
    """Rebuild the torch model of a TrainedSeparator on ``device`` (for inference)."""
    import torch

    model = build_model(trained.config, trained.two_sided)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in trained.state.items()})
    return model.to(device).eval()


def separate_block(trained: TrainedSeparator, model, device, mixed, rgb1, rgb2=None) -> np.ndarray:
    """Separate a batch of blocks: returns (B, H, W, 3) = side 1, side 2, re-synthesis error.

    All in the mixture's units; side 1 + side 2 + error = mixture.
    """
    import torch

    norm = trained.normalisation
    with torch.no_grad():
        t = prepare_tensors(mixed, rgb1, rgb2, norm, device)
        x1, x2 = model(t["x"], t["rgb1"], t["linear1"], t.get("rgb2"), t.get("linear2"))
        x1 = x1 - trained.side2_offset
        x2 = x2 + trained.side2_offset
    side1 = x1[:, 0].cpu().numpy() * norm.span + norm.low
    side2 = x2[:, 0].cpu().numpy() * norm.span
    error = np.asarray(mixed, dtype=np.float32) - side1 - side2
    return np.stack([side1, side2, error], axis=-1).astype(np.float32)
