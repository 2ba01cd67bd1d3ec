"""Train or fine-tune a denoiser on the user's own images (the Train widget and ``mbdl train-denoiser``)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_mbdl.engine import CancelToken, InputError, Progress


def _planes(images, what: str) -> list[np.ndarray]:
    """Split arrays with any leading axes into 2D float32 planes scaled like the denoiser's inputs."""
    from napari_mbdl.denoise.api import default_data_range

    planes = []
    for img in images if isinstance(images, (list, tuple)) else [images]:
        arr = np.asarray(img)
        if arr.ndim < 2 or arr.size == 0:
            raise InputError(f"the {what} images must be 2D or stacks of 2D images")
        if arr.dtype.kind not in "biuf":
            raise InputError(f"the {what} images have dtype {arr.dtype}; use integers or floats")
        lo, hi = default_data_range(arr.dtype)
        arr = ((arr.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"the {what} images contain NaN or infinite values")
        planes.extend(arr.reshape(-1, *arr.shape[-2:]))
    return planes


def train_denoiser_steps(
    clean,
    *,
    noisy=None,
    model: str = "winnet",
    init: str | Path | None = "shipped",
    sigma: float | tuple[float, float] = 25.0,
    steps: int = 200,
    batch: int = 10,
    patch: int = 40,
    lr: float = 5e-4,
    seed: int = 0,
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 5,
    device: str = "auto",
) -> Generator[Progress, None, dict]:
    """Train (``init=None``) or fine-tune a LINN/WINNet denoiser; yields Progress (loss previews).

    Parameters
    ----------
    clean : array or list of arrays
        Clean images (2D or stacks); integers are scaled by their dtype range.
    noisy : array or list of arrays, optional
        Noisy partners with the same shapes; without them Gaussian noise of ``sigma`` is added.
    model : {"winnet", "linn"}
    init : "shipped", a weights path, or None
        Start from the shipped blind model of ``model``, from a file, or from scratch.
    sigma : float or (low, high)
        Noise level (8-bit units) to add, or a range for a blind model; with ``noisy``, the level
        the network is told.
    out : path, optional
        Weights file written at the end (and when cancelled).
    checkpoint : path, optional
        Resumable checkpoint; an existing one with the same settings is resumed.
    preview_every : int
        Steps between progress events carrying the running loss (for the live plot).
    device : str
        Where the network trains: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``mps``.

    Returns
    -------
    dict with ``model``, ``step``, ``loss``, ``path`` (the weights file or None).
    """
    from napari_mbdl.denoise.nets import PRESETS, InvertibleDenoiser, count_parameters
    from napari_mbdl.denoise.train import load_checkpoint, train_steps
    from napari_mbdl.denoise.weights import load_weights, save_weights, shipped_path
    from napari_mbdl.engine.device import resolve_device

    if model not in PRESETS:
        raise InputError(f"unknown model {model!r}; choose winnet or linn")
    if int(steps) < 1:
        raise InputError("steps must be at least 1")
    clean_planes = _planes(clean, "clean")
    noisy_planes = _planes(noisy, "noisy") if noisy is not None else None
    if noisy_planes is not None and [p.shape for p in noisy_planes] != [p.shape for p in clean_planes]:
        raise InputError("the noisy and clean images must have the same shapes")
    small = min(min(p.shape) for p in clean_planes)
    if small < 16:
        raise InputError(f"training images must be at least 16 pixels on each side (smallest: {small})")
    patch = int(min(patch, small))
    if isinstance(sigma, (tuple, list)):
        lo, hi = float(sigma[0]), float(sigma[1])
        if not 0 <= lo < hi <= 75:
            raise InputError(f"a blind noise range must satisfy 0 <= low < high <= 75, got {sigma}")
        sigma = (lo, hi)
    elif not 0 < float(sigma) <= 75:
        raise InputError(f"sigma {sigma} is outside 0-75 (8-bit units)")
    device = resolve_device(device)  # a GPU asked for and missing is refused before any work
    info: dict = {}
    if init == "shipped":
        init = shipped_path(model, None)
    if init:
        net, _ = load_weights(init)
        info["initialised_from"] = Path(init).name
    else:
        net = InvertibleDenoiser(**PRESETS[model])
    state = load_checkpoint(checkpoint) if checkpoint else None
    final = yield from train_steps(
        net, clean_planes, sigma=sigma, noisy=noisy_planes, steps=int(steps), batch=int(batch), patch=patch,
        lr=float(lr), lr_final=float(lr) / 20, seed=int(seed), state=state,
        start_step=state["step"] if state else 0, checkpoint=checkpoint, cancel=cancel,
        preview_every=int(preview_every), device=device,
    )
    path = None
    if out is not None:
        info.update(data=f"{len(clean_planes)} user images" + (" with noisy pairs" if noisy_planes else ""),
                    sigma=str(sigma), steps=final["step"], seed=seed, lr=lr, batch=batch, patch=patch,
                    final_train_loss=final["loss"], parameters=count_parameters(net),
                    device=device)
        path = save_weights(net, out, kind="denoiser", name=model, info=info)
    yield Progress("train", final["step"], int(steps), "saved" if path else "done")
    return {"model": net, "step": final["step"], "loss": final["loss"], "path": path}
