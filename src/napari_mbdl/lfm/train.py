"""Semi-supervised training of the unfolded ISTA network on simulated light fields (seeded, resumable).

As in the slides (Verinaz-Jadan et al. 2023): a *small* set of volumes with ground truth, and many light fields
without it, for which the loss is the light-field re-synthesis error ``||H x_hat - y||^2``::

    loss = mean_gt ||x_hat - x||^2 / ||x||^2  +  mu * mean_all ||H x_hat - y||^2 / ||y||^2

(both in the network's normalised units).  The adversarial term of the paper is left out.

Run (the shipped weights were made with exactly this command)::

    python -m napari_mbdl.lfm.train --out runs/lfm --steps 300 --seed 0
    python -m napari_mbdl.lfm.train --out runs/lfm --steps 300 --seed 0 --resume   # continue after a stop

It writes ``checkpoint.pt`` every ``--checkpoint-every`` steps, and at the end the weights
(``unfolded_ista.safetensors``, with optics and training figures in its metadata) and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_mbdl.lfm.operator import LFMOperator
from napari_mbdl.lfm.optics import LFOptics, default_cache_dir, load_or_compute_psf
from napari_mbdl.lfm.simulate import simulate_sample
from napari_mbdl.lfm.unfolded import UnfoldedISTA, robust_scale


def make_example(psf, H, seed: int, n_lenslets: int):
    """One simulated training example with random density and brightness, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    n_cells = int(rng.integers(2, 3 + n_lenslets * n_lenslets // 8))
    photons = float(rng.uniform(100.0, 1000.0))
    sample = simulate_sample(psf, n_lenslets=(n_lenslets, n_lenslets), n_cells=n_cells, photons=photons,
                             read_noise=2.0, seed=seed, operator=H)
    return sample.light_field, sample.volume


def psnr(truth: np.ndarray, estimate: np.ndarray) -> float:
    mse = float(np.mean((truth - estimate) ** 2))
    return float(10 * np.log10(float(truth.max()) ** 2 / max(mse, 1e-20)))


def train(out_dir: Path, steps: int = 300, seed: int = 0, n_layers: int = 8, n_gt: int = 32, batch_gt: int = 2,
          batch_unlabelled: int = 2, n_lenslets: int = 9, mu: float = 0.1, lr: float = 0.02,
          checkpoint_every: int = 25, resume: bool = False, optics: LFOptics | None = None, log=print,
          stop_at: int | None = None) -> dict:
    """Train; returns the training log (also written to ``out_dir/training_log.json``).

    ``stop_at`` ends the run early after a checkpoint at that step, as an interruption would (tests).
    """
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    optics = optics or LFOptics()
    psf = load_or_compute_psf(optics, default_cache_dir())
    H = LFMOperator(psf)
    # The small ground-truth set: fixed volumes; the unlabelled light fields are new at every step.
    gt_set = [make_example(psf, H, seed * 100_000 + 1_000 + i, n_lenslets) for i in range(n_gt)]
    val_set = [make_example(psf, H, seed * 100_000 + 90_000 + i, n_lenslets) for i in range(4)]
    model = UnfoldedISTA(optics.n_depths, n_layers=n_layers, step=1.0 / H.lipschitz())
    params = [{"params": [model.log_step, model.log_threshold], "lr": lr}]
    if model.use_momentum:
        params.append({"params": [model.momentum], "lr": lr / 4})
    if model.use_correction:
        params.append({"params": [model.correction_in, model.correction_out], "lr": lr / 10})
    optimiser = torch.optim.Adam(params)
    # cosine decay: large steps early, small late, for a quieter end point
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(i / steps, 1.0))))
    history: list[dict] = []
    start = 0
    checkpoint = out_dir / "checkpoint.pt"
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["step"], state["history"]
        log(f"resumed at step {start}")

    def validate() -> float:
        with torch.no_grad():
            return float(np.mean([psnr(v, model.reconstruct(H, lf)) for lf, v in val_set]))

    if start == 0:
        history.append({"step": 0, "val_psnr": validate()})
        log(f"step 0 val PSNR {history[-1]['val_psnr']:.2f} dB (untrained: FISTA, {n_layers} iterations)")
    t0 = time.time()
    for step in range(start, steps):
        rng = np.random.default_rng([seed, step])  # the data of a step depend on (seed, step) only: exact resume
        labelled = [gt_set[i] for i in rng.choice(n_gt, batch_gt, replace=False)]
        unlabelled = [make_example(psf, H, seed * 100_000 + 200_000 + step * batch_unlabelled + b, n_lenslets)[0]
                      for b in range(batch_unlabelled)]
        y = torch.as_tensor(np.stack([lf for lf, _ in labelled] + unlabelled))
        x_true = torch.as_tensor(np.stack([v for _, v in labelled]))
        scale = robust_scale(y)
        x_hat = model(H, y) / scale.view(-1, 1, 1, 1)
        yn = y / scale
        x_true_n = x_true / scale[:batch_gt].view(-1, 1, 1, 1)
        loss_gt = (((x_hat[:batch_gt] - x_true_n) ** 2).sum(dim=(1, 2, 3)) / (x_true_n**2).sum(dim=(1, 2, 3))).mean()
        resynth = H.forward(x_hat)
        loss_lf = (((resynth - yn) ** 2).sum(dim=(1, 2)) / (yn**2).sum(dim=(1, 2))).mean()
        loss = loss_gt + mu * loss_lf
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        loss, loss_gt, loss_lf = loss.detach(), loss_gt.detach(), loss_lf.detach()
        entry = {"step": step + 1, "loss": float(loss), "loss_gt": float(loss_gt), "loss_lf": float(loss_lf)}
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            entry["val_psnr"] = validate()
            log(f"step {step + 1} loss {float(loss):.4f} (gt {float(loss_gt):.4f}, lf {float(loss_lf):.4f}) "
                f"val PSNR {entry['val_psnr']:.2f} dB, {time.time() - t0:.0f} s")
        history.append(entry)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps or step + 1 == stop_at:
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step + 1,
                        "history": history}, checkpoint)
        if stop_at is not None and step + 1 >= stop_at:
            log(f"stopped at step {step + 1}")
            return {"config": None, "history": history}
    config = {"steps": steps, "seed": seed, "n_layers": n_layers, "n_gt": n_gt, "batch_gt": batch_gt,
              "batch_unlabelled": batch_unlabelled, "n_lenslets": n_lenslets, "mu": mu, "lr": lr,
              "data": "simulate_sample: 2..12 Gaussian cells (2.5 um), 100..1000 photons peak, read noise 2"}
    final = {"val_psnr_db": history[-1].get("val_psnr"), "val_psnr_untrained_db": history[0]["val_psnr"]}
    model.save(out_dir / "unfolded_ista.safetensors",
               metadata={"optics": optics.to_dict(), "training": config, "validation": final})
    with open(out_dir / "training_log.json", "w") as handle:
        json.dump({"config": config, "optics": optics.to_dict(), "history": history}, handle, indent=1)
    return {"config": config, "history": history}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--n-gt", type=int, default=32, help="size of the ground-truth set")
    parser.add_argument("--mu", type=float, default=0.1, help="weight of the light-field re-synthesis loss")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--optics", type=Path, default=None, help="optics YAML (default: LFOptics())")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    optics = LFOptics.from_yaml(args.optics) if args.optics else LFOptics()
    train(args.out, steps=args.steps, seed=args.seed, n_layers=args.layers, n_gt=args.n_gt, mu=args.mu, lr=args.lr,
          resume=args.resume, optics=optics)


if __name__ == "__main__":
    main()
