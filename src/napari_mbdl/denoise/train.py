"""Training of the LINN / WINNet denoisers and of NENet: seeded, resumable, scored on Set12.

Also a script: ``python -m napari_mbdl.denoise.train --help``.  The shipped weights were made
with ``python -m napari_mbdl.denoise.train_schedule`` (see ``weights/MODEL_CARD.md``).

Data: clean grey images (e.g. the 400 180x180 BSD images "Train400"); noisy inputs are made on
the fly with Gaussian noise of a fixed sigma or of a sigma drawn uniformly from a range (blind
models), or taken from noisy/clean pairs.  Every random draw comes from one seeded numpy
generator, so a run is reproducible (on one thread) and a resumed run continues the same stream.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.engine.progress import CancelToken, Progress

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ data
def load_image_folder(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Grey images of a folder (png/tif/jpg) as float32 arrays in [0, 1], sorted by name."""
    from skimage import io as skio

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".tif", ".tiff", ".jpg", ".bmp"})
    if not files:
        raise InputError(f"no images in {folder}")
    images = []
    for path in files[:limit]:
        img = skio.imread(path)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        images.append(to_unit_range(img))
    return images


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """Integers scaled by their dtype's range, floats kept (as float32)."""
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    return img.astype(np.float32)


def sample_patches(
    images: Sequence[np.ndarray], batch: int, patch: int, rng: np.random.Generator,
    partners: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random ``patch x patch`` crops with random flips / 90 degree rotations, ``(batch, 1, p, p)``.

    If ``partners`` (same shapes as ``images``) is given, the same crops are taken from them too.
    """
    out = np.empty((batch, 1, patch, patch), np.float32)
    out2 = np.empty_like(out) if partners is not None else None
    for i in range(batch):
        k = int(rng.integers(len(images)))
        img = images[k]
        y = int(rng.integers(img.shape[0] - patch + 1))
        x = int(rng.integers(img.shape[1] - patch + 1))
        rot, flip = int(rng.integers(4)), bool(rng.integers(2))
        for arr, dst in ((img, out), (partners[k] if partners is not None else None, out2)):
            if arr is None:
                continue
            crop = np.rot90(arr[y : y + patch, x : x + patch], rot)
            dst[i, 0] = crop[:, ::-1] if flip else crop
    return out, out2


def noisy_set(images: Sequence[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    """The fixed noisy versions of test images (seed ``seed + index``), for reproducible PSNRs."""
    return [
        (img + np.random.default_rng(seed + i).standard_normal(img.shape) * (sigma / 255.0)).astype(np.float32)
        for i, img in enumerate(images)
    ]


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1] (the estimate clipped to [0, 1], as on 8-bit displays)."""
    mse = float(np.mean((np.clip(estimate, 0, 1) - clean) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def evaluate(model, images: Sequence[np.ndarray], sigma: float, seed: int = 0, model_sigma=None) -> float:
    """Mean PSNR over ``images`` with fixed Gaussian noise; ``model_sigma`` defaults to ``sigma``."""
    import torch

    scores = []
    model.eval()
    with torch.inference_mode():
        for clean, noisy in zip(images, noisy_set(images, sigma, seed)):
            s = sigma if model_sigma is None else model_sigma
            out = model(torch.from_numpy(noisy)[None, None], float(s))[0, 0].numpy()
            scores.append(psnr(clean, out))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------- the training
def train_steps(
    model,
    clean: Sequence[np.ndarray],
    *,
    sigma: float | tuple[float, float] = 25.0,
    noisy: Sequence[np.ndarray] | None = None,
    steps: int = 1000,
    batch: int = 16,
    patch: int = 48,
    lr: float = 1e-3,
    lr_final: float = 5e-5,
    seed: int = 0,
    start_step: int = 0,
    state: dict | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    reg_weight: float = 1e-5,
    cancel: CancelToken | None = None,
    preview_every: int = 10,
    device: str = "cpu",
) -> Generator[Progress, None, dict]:
    """Train a denoiser; yields Progress (preview: ``{"step", "loss"}``), returns the final state.

    Parameters
    ----------
    model : InvertibleDenoiser
        Trained in place.
    clean : list of 2D float arrays in [0, 1]
        Training images (each at least ``patch`` pixels wide).
    sigma : float or (low, high)
        Gaussian noise level (8-bit units), or a range for a blind model.  Ignored with ``noisy``.
    noisy : list of arrays, optional
        Noisy partners of ``clean`` (real pairs); ``sigma`` is then only the level the network is
        told (a number).
    steps : int
        Total number of optimiser steps (the cosine learning-rate schedule spans them).
    start_step, state :
        Resume: the step reached and the state dict from :func:`load_checkpoint`.
    checkpoint : path, optional
        Where to write a resumable checkpoint (weights, optimiser, generator state) every
        ``checkpoint_every`` steps and at the end.
    cancel : CancelToken, optional
        Checked every step; on cancel a checkpoint is written and the state returned.
    device : str
        Where the network trains (``auto``, ``cpu``, ``cuda``, ...).  Crops and noise are drawn on
        the CPU by the seeded generator whatever the device, so a run draws the same batches
        anywhere; the model is moved back to the CPU at the end.
    """
    import torch

    from napari_mbdl.engine.device import resolve_device

    for img in clean:
        if img.ndim != 2 or min(img.shape) < patch:
            raise InputError(f"training images must be 2D and at least {patch} pixels on each side")
    if noisy is not None and len(noisy) != len(clean):
        raise InputError("noisy and clean image lists differ in length")
    device = resolve_device(device)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
    blind = isinstance(sigma, (tuple, list))
    model.train()
    loss_avg = None
    step = start_step
    t0 = time.perf_counter()

    def snapshot() -> dict:
        return {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "rng": rng.bit_generator.state,
            "step": step,
            "steps": steps,
            "loss": loss_avg,
        }

    while step < steps:
        if cancel is not None and cancel.cancelled:
            break
        frac = step / max(steps - 1, 1)
        for group in optimiser.param_groups:  # cosine decay from lr to lr_final
            group["lr"] = lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * frac))
        target, noisy_batch = sample_patches(clean, batch, patch, rng, noisy)
        if noisy_batch is None:
            levels = rng.uniform(*sigma, size=batch) if blind else np.full(batch, float(sigma))
            noise = rng.standard_normal(target.shape) * (levels[:, None, None, None] / 255.0)
            noisy_batch = (target + noise).astype(np.float32)
        else:
            levels = np.full(batch, float(sigma if not blind else np.mean(sigma)))
        x = torch.from_numpy(noisy_batch).to(device)
        y = torch.from_numpy(target).to(device)
        out = model(x, torch.from_numpy(levels.astype(np.float32)).to(device))
        loss = torch.mean((out - y) ** 2)
        total = loss
        reg = model.regulariser() if hasattr(model, "regulariser") else None
        if reg is not None and reg_weight:
            total = total + reg_weight * reg
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
            save_checkpoint(checkpoint, snapshot())
        if step % preview_every == 0 or step == steps:
            rate = (step - start_step) / max(time.perf_counter() - t0, 1e-9)
            psnr_est = 10 * math.log10(1 / max(loss_avg, 1e-12))
            yield Progress(
                "train", step, steps, f"loss {loss_avg:.2e} (~{psnr_est:.2f} dB), {rate:.2f} it/s",
                preview={"step": step, "loss": loss_avg},
            )
    model.eval()
    model.to("cpu")
    final = snapshot()
    if checkpoint is not None:
        save_checkpoint(checkpoint, final)
    return final


def train_nenet_steps(
    model, clean: Sequence[np.ndarray], *, sigma_range=(0.0, 55.0), steps: int = 600, batch: int = 8,
    patch: int = 64, lr: float = 1e-3, seed: int = 0, state: dict | None = None, start_step: int = 0,
    checkpoint: str | Path | None = None, checkpoint_every: int = 100, cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict]:
    """Train NENet to estimate sigma (L1 loss in 8-bit units) on noisy crops of ``clean``."""
    import torch

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
    step, loss_avg = start_step, None

    def snapshot():
        return {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state,
                "step": step, "steps": steps, "loss": loss_avg}

    model.train()
    while step < steps:
        if cancel is not None and cancel.cancelled:
            break
        target, _ = sample_patches(clean, batch, patch, rng)
        levels = rng.uniform(*sigma_range, size=batch).astype(np.float32)
        noisy = (target + rng.standard_normal(target.shape) * (levels[:, None, None, None] / 255)).astype(np.float32)
        estimate = model(torch.from_numpy(noisy))
        loss = torch.mean(torch.abs(estimate - torch.from_numpy(levels)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
        if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
            save_checkpoint(checkpoint, snapshot())
        if step % 10 == 0 or step == steps:
            yield Progress("train NENet", step, steps, f"mean |error| {loss_avg:.2f}",
                           preview={"step": step, "loss": loss_avg})
    model.eval()
    final = snapshot()
    if checkpoint is not None:
        save_checkpoint(checkpoint, final)
    return final


def evaluate_nenet(model, images: Sequence[np.ndarray], sigmas=(5, 15, 25, 50), seed: int = 0) -> dict[str, float]:
    """Mean absolute error (8-bit units) of NENet's estimate on fixed noisy versions of ``images``."""
    import torch

    result = {}
    with torch.inference_mode():
        for s in sigmas:
            errors = [
                abs(float(model(torch.from_numpy(n)[None, None])[0]) - s) for n in noisy_set(images, s, seed)
            ]
            result[str(s)] = float(np.mean(errors))
    return result


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write a resumable training state: ``.pt`` (torch pickle) or ``.safetensors`` (tensors +
    JSON metadata; small, safe to ship: the committed resume files use it)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in state["model"].items()}
        optim_state = {}
        for index, entry in state["optimiser"]["state"].items():
            optim_state[str(index)] = {}
            for key, value in entry.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    tensors[f"optim/{index}/{key}"] = value.detach().cpu().contiguous()
                else:
                    optim_state[str(index)][key] = float(value)
        meta = {
            "format": "napari-mbdl-denoise-checkpoint/1",
            "param_groups": json.dumps(state["optimiser"]["param_groups"]),
            "optim_scalars": json.dumps(optim_state),
            "rng": json.dumps(state["rng"]),
            "step": str(state["step"]),
            "steps": str(state["steps"]),
            "loss": json.dumps(state["loss"]),
        }
        save_file(tensors, str(tmp), metadata=meta)
    else:
        torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict | None:
    """Read a state written by :func:`save_checkpoint`; None if the file does not exist."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix != ".safetensors":
        return torch.load(path, map_location="cpu", weights_only=False)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != "napari-mbdl-denoise-checkpoint/1":
            raise InputError(f"{path.name} is not a napari-mbdl training checkpoint")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optim_state: dict = {}
    for index, scalars in json.loads(meta["optim_scalars"]).items():
        optim_state[int(index)] = {key: torch.tensor(value) for key, value in scalars.items()}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            optim_state.setdefault(int(index), {})[name] = value
    return {
        "model": model,
        "optimiser": {"state": optim_state, "param_groups": json.loads(meta["param_groups"])},
        "rng": json.loads(meta["rng"]),
        "step": int(meta["step"]),
        "steps": int(meta["steps"]),
        "loss": json.loads(meta["loss"]),
    }


# ---------------------------------------------------------------------------------------- script
def _parse_sigma(text: str):
    if text == "blind":
        return (0.0, 55.0)
    if "-" in text:
        lo, hi = (float(v) for v in text.split("-"))
        return (lo, hi)
    return float(text)


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_mbdl.denoise.nets import PRESETS, InvertibleDenoiser, NENet, count_parameters
    from napari_mbdl.denoise.weights import load_weights, save_weights
    from napari_mbdl.engine.device import resolve_device

    parser = argparse.ArgumentParser(description="Train a LINN/WINNet denoiser or NENet (seeded, resumable).")
    parser.add_argument("--model", choices=["winnet", "linn", "nenet"], required=True)
    parser.add_argument("--sigma", default="25", help="noise level, a range 'lo-hi', or 'blind' (0-55)")
    parser.add_argument("--data", default="/work/shared/data/denoise/Train400")
    parser.add_argument("--eval-data", default="/work/shared/data/denoise/Set12")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="start from these weights (safetensors), e.g. fine-tune")
    parser.add_argument("--checkpoint", required=True, help="resumable checkpoint file (.pt); resumes if present")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu",
                        help="where LINN / WINNet train: cpu (default, as the shipped weights), cuda, mps or auto (NENet, "
                             "a few thousand parameters, always trains on the CPU)")
    parser.add_argument("--config", default="{}", help="JSON overrides of the architecture preset")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:  # a device that is not here is refused before any data is read
        device = resolve_device(args.device)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sigma = _parse_sigma(args.sigma)
    clean = load_image_folder(args.data)
    eval_images = load_image_folder(args.eval_data) if args.eval_data else []
    state = load_checkpoint(args.checkpoint)
    info: dict[str, Any] = {}
    prior_steps = 0
    if args.model == "nenet":
        model = NENet(**json.loads(args.config))
        steps = train_nenet_steps(
            model, clean, sigma_range=sigma if isinstance(sigma, tuple) else (0.0, 55.0), steps=args.steps,
            seed=args.seed, state=state, start_step=state["step"] if state else 0, checkpoint=args.checkpoint,
        )
    else:
        if args.init:
            model, meta = load_weights(args.init)
            prior_steps = int(meta["info"].get("total_steps", 0))
            info["initialised_from"] = {"file": Path(args.init).name, "total_steps": prior_steps,
                                        "sigma": meta["info"].get("sigma")}
        else:
            model = InvertibleDenoiser(**{**PRESETS[args.model], **json.loads(args.config)})
        steps = train_steps(
            model, clean, sigma=sigma, steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr,
            seed=args.seed, state=state, start_step=state["step"] if state else 0, checkpoint=args.checkpoint,
            device=device,
        )
    t0 = time.time()
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            final = stop.value
            break
        if event.done % 50 == 0 or event.done == event.total:
            print(f"[{args.model} {args.sigma}] step {event.done}/{event.total} {event.message}", flush=True)
    info.update(
        data=f"{Path(args.data).name} ({len(clean)} images), random {args.patch}x{args.patch} crops, flips/rotations",
        noise="gaussian", sigma=args.sigma, steps=final["step"], total_steps=prior_steps + final["step"],
        batch=args.batch, lr=args.lr, seed=args.seed, final_train_loss=final["loss"],
        wall_seconds_this_run=round(time.time() - t0, 1), threads=args.threads,
        device="cpu" if args.model == "nenet" else device,
        parameters=count_parameters(model), torch=torch.__version__,
    )
    if eval_images:
        name = Path(args.eval_data).name
        if args.model == "nenet":
            info[f"mae_{name}"] = evaluate_nenet(model, eval_images)
        else:
            levels = (15, 25, 50) if isinstance(sigma, tuple) else (int(sigma),)
            info[f"psnr_{name}"] = {str(s): round(evaluate(model, eval_images, s), 3) for s in levels}
        scores = {k: v for k, v in info.items() if k.startswith(("psnr", "mae"))}
        print(f"[{args.model} {args.sigma}] eval {json.dumps(scores)}", flush=True)
    save_weights(model, args.out, kind="nenet" if args.model == "nenet" else "denoiser", name=args.model, info=info)
    print(f"[{args.model} {args.sigma}] wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
