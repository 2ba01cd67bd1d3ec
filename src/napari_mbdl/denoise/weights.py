"""Saving and loading denoiser weights (safetensors + JSON metadata); the shipped model registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_mbdl.engine.errors import InputError

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Noise levels with a dedicated (non-blind) shipped model.
TRAINED_SIGMAS = (15, 25, 50)
#: Range of noise levels the blind models were trained on (8-bit units).
BLIND_RANGE = (0.0, 55.0)
MODELS = ("winnet", "linn")


def shipped_path(model: str, sigma: float | str | None) -> Path:
    """File of a shipped model: ``<model>_s<sigma>.safetensors`` or ``<model>_blind.safetensors``."""
    if model == "nenet":
        return WEIGHTS_DIR / "nenet.safetensors"
    tag = "blind" if sigma in (None, "blind") else f"s{int(sigma)}"
    return WEIGHTS_DIR / f"{model}_{tag}.safetensors"


def available_weights() -> list[str]:
    """Names (file stems) of the weights files shipped with the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def save_weights(model, path: str | Path, *, kind: str, name: str, info: dict[str, Any] | None = None) -> Path:
    """Write a model's weights and config to ``path`` (safetensors, metadata as JSON strings).

    Parameters
    ----------
    model : torch.nn.Module
        An :class:`~napari_mbdl.denoise.nets.InvertibleDenoiser` or :class:`~napari_mbdl.denoise.nets.NENet`.
    kind : str
        ``"denoiser"`` or ``"nenet"``.
    name : str
        Model family (``"winnet"``, ``"linn"``, ``"nenet"``) for people reading the file.
    info : dict, optional
        Training facts (data, steps, seed, sigma, scores); stored as JSON.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "napari-mbdl-denoise/1",
        "kind": kind,
        "name": name,
        "config": json.dumps(model.config),
        "info": json.dumps(info or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file (config and info decoded); InputError if it is not one of ours."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as error:  # corrupt or not safetensors
        raise InputError(f"{path.name} is not a safetensors weights file ({error})") from None
    if meta.get("format") != "napari-mbdl-denoise/1":
        raise InputError(f"{path.name} is not a napari-mbdl denoiser weights file")
    return {**meta, "config": json.loads(meta["config"]), "info": json.loads(meta.get("info", "{}"))}


def load_weights(path: str | Path, expect_kind: str = "denoiser"):
    """Build the model a weights file describes and load its tensors.

    Returns
    -------
    model : torch.nn.Module (in eval mode)
    meta : dict
        The file's metadata (``config``, ``info``, ``name``, ``kind``).
    """
    from safetensors.torch import load_file

    from napari_mbdl.denoise.nets import NENet, InvertibleDenoiser

    meta = read_metadata(path)
    if meta["kind"] != expect_kind:
        raise InputError(f"{Path(path).name} holds a {meta['kind']} model, expected a {expect_kind}")
    try:
        model = InvertibleDenoiser(**meta["config"]) if expect_kind == "denoiser" else NENet(**meta["config"])
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        raise InputError(f"{Path(path).name} does not match its declared architecture: {error}") from None
    model = model.for_inference() if expect_kind == "denoiser" else model.eval()
    return model, meta
