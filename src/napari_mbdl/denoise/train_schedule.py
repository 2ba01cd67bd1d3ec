"""The training schedule that produced the shipped weights (run in the background, resumable).

``python -m napari_mbdl.denoise.train_schedule RUN_DIR [--threads N] [--device cuda] [--only NAME ...]``
``python -m napari_mbdl.denoise.train_schedule RUN_DIR --ship``  (copy the finished weights into
the package, write ``weights/MODEL_CARD.md`` and ``weights/model_card.json`` from their metadata,
and the resumable states of the blind models to ``weights/resume/<stage>.safetensors``)

To continue a shipped blind model's run exactly (same cosine schedule), copy its resume file to
``RUN_DIR/ckpt/<stage>.safetensors`` and run ``python -m napari_mbdl.denoise.train --checkpoint
RUN_DIR/ckpt/<stage>.safetensors`` with the stage's arguments; to train it further, pass the
shipped weights as ``--init`` with a new step budget.

Stages run in priority order; a stage whose weights file already exists in ``RUN_DIR/weights``
is skipped, and an interrupted stage resumes from its checkpoint in ``RUN_DIR/ckpt``.  Copy the
finished ``*.safetensors`` into ``src/napari_mbdl/denoise/weights/``.  All stages use seed 0
(``--threads N``: torch CPU threads, default 1, recorded in each file), batch 10 of 40x40 crops of Train400 with synthetic Gaussian noise.  The fixed-sigma
models are fine-tunes of the blind model of their family (noise-conditioned thresholds make the
blind model a valid starting point for any sigma).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from napari_mbdl.denoise.train import main as train_main

#: name, model, sigma, steps, lr, init (a stage name or None).  Stages ending in "_r<N>" are
#: intermediate rounds (kept in RUN_DIR, not shipped): the next stage continues them with a new
#: cosine schedule.
STAGES = [
    ("nenet", "nenet", "blind", 150, 1e-3, None),
    ("winnet_blind_r1", "winnet", "blind", 1000, 1e-3, None),
    ("linn_blind_r1", "linn", "blind", 300, 1e-3, None),
    ("winnet_blind_r2", "winnet", "blind", 5000, 5e-4, "winnet_blind_r1"),
    ("winnet_blind_r3", "winnet", "blind", 4500, 3e-4, "winnet_blind_r2"),
    ("winnet_blind", "winnet", "blind", 10000, 2e-4, "winnet_blind_r3"),
    ("linn_blind_r2", "linn", "blind", 4000, 5e-4, "linn_blind_r1"),
    ("linn_blind", "linn", "blind", 6000, 3e-4, "linn_blind_r2"),
    ("winnet_s25", "winnet", "25", 60, 2e-4, "winnet_blind"),
    ("winnet_s15", "winnet", "15", 60, 2e-4, "winnet_blind"),
    ("winnet_s50", "winnet", "50", 60, 2e-4, "winnet_blind"),
    ("linn_s25", "linn", "25", 40, 2e-4, "linn_blind"),
    ("linn_s15", "linn", "15", 40, 2e-4, "linn_blind"),
    ("linn_s50", "linn", "50", 40, 2e-4, "linn_blind"),
]


def is_intermediate(stage: str) -> bool:
    """Whether a stage is an intermediate round ("..._r<N>"), continued by a later stage."""
    return re.search(r"_r\d+$", stage) is not None


def ship(run_dir: Path, notes: str = "") -> Path:
    """Copy finished weights into the package and write the model card from their metadata."""
    from napari_mbdl.denoise.weights import WEIGHTS_DIR, read_metadata

    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    cards = {}
    for name, *_ in STAGES:
        source = run_dir / "weights" / f"{name}.safetensors"
        if is_intermediate(name) or not source.exists():
            continue
        shutil.copy2(source, WEIGHTS_DIR / source.name)
        meta = read_metadata(source)
        cards[name] = {"kind": meta["kind"], "family": meta["name"], "config": meta["config"], **meta["info"]}
    # resumable states of the blind models (weights + Adam moments + generator), small safetensors
    from napari_mbdl.denoise.train import load_checkpoint, save_checkpoint

    for name in ("winnet_blind", "linn_blind"):
        state = load_checkpoint(run_dir / "ckpt" / f"{name}.pt")
        if state is not None:
            save_checkpoint(WEIGHTS_DIR / "resume" / f"{name}.safetensors", state)
    (WEIGHTS_DIR / "model_card.json").write_text(json.dumps(cards, indent=2))
    lines = [
        "# Model card: napari-mbdl denoisers (LINN, WINNet) and NENet",
        "",
        "Trained by this project with `python -m napari_mbdl.denoise.train_schedule RUN_DIR` (stages, steps,",
        "learning rates and seeds are in `STAGES` there; every stage is seeded and resumable).  Data: the",
        "400 grey 180x180 BSD images of Train400, random 40x40 crops with flips and rotations, batch 10, synthetic",
        "Gaussian noise (blind models: sigma uniform in 0-55 per crop, told the true sigma).  Adam, cosine",
        "learning-rate decay, MSE loss (+1e-5 x the LISTA frame regulariser).  One CPU thread, torch CPU.",
        "Scores: mean PSNR (dB) on Set12 (12 images, noise seed = image index), output clipped to [0, 1],",
        "computed by the training script at the end of each stage; NENet: mean |sigma error| on Set12.",
        "",
        "| weights | family | trained sigma | steps (this stage / total) | parameters | Set12 score |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in cards.items():
        score = c.get("psnr_Set12") or c.get("mae_Set12") or {}
        score_text = ", ".join(f"{k}: {v:.2f}" for k, v in score.items())
        if c["kind"] == "nenet":
            score_text = "mean abs error at sigma " + score_text
        lines.append(f"| {name}.safetensors | {c['family']} | {c.get('sigma')} | {c.get('steps')} / "
                     f"{c.get('total_steps', c.get('steps'))} | {c.get('parameters', '')} | {score_text} |")
    lines += ["", "Architecture (config stored in each file):", ""]
    for name, c in cards.items():
        lines.append(f"* `{name}`: {json.dumps(c['config'])}")
    card = WEIGHTS_DIR / "MODEL_CARD.md"
    if not notes and card.exists():  # keep the hand-written sections (from the first "## ") of the old card
        old = card.read_text()
        notes = old[old.index("\n## ") + 1 :] if "\n## " in old else ""
    if notes:
        lines += ["", notes.rstrip("\n")]
    card.write_text("\n".join(lines) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_dir = Path(argv.pop(0))
    if "--ship" in argv:
        print(ship(run_dir))
        return 0
    threads = "1"
    if "--threads" in argv:  # torch CPU threads of every stage run now (recorded in each file's metadata)
        at = argv.index("--threads")
        threads = argv[at + 1]
        del argv[at : at + 2]
    device = "cpu"
    if "--device" in argv:  # where LINN / WINNet stages run now (recorded in each file's metadata)
        at = argv.index("--device")
        device = argv[at + 1]
        del argv[at : at + 2]
    only = set(argv[argv.index("--only") + 1 :]) if "--only" in argv else None
    weights = run_dir / "weights"
    for name, model, sigma, steps, lr, init in STAGES:
        if only and name not in only:
            continue
        out = weights / f"{name}.safetensors"
        if out.exists():
            print(f"[schedule] {name}: done already", flush=True)
            continue
        args = ["--model", model, "--sigma", sigma, "--steps", str(steps), "--lr", str(lr), "--seed", "0",
                "--batch", "10", "--patch", "40", "--checkpoint", str(run_dir / "ckpt" / f"{name}.pt"),
                "--out", str(out), "--threads", threads, "--device", device]
        if init:
            args += ["--init", str(weights / f"{init}.safetensors")]
        print(f"[schedule] {name}: train {' '.join(args)}", flush=True)
        train_main(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
