"""Second activity route: the unfolded ISTA network trained with 2P-derived volumes (semi-supervised).

As in the slides (Verinaz-Jadan et al., IEEE TCI 2023), ground truth for light-field reconstruction is
scarce; the 2P stack supplies it.  The registered 2P footprints (cell shapes and positions of *this*
sample, in LFM space) are combined with random non-negative activities into a small set of
2P-derived volumes whose light fields are simulated through the physical ``H`` with
Poisson-Gaussian noise.  The network (:class:`napari_mbdl.lfm.unfolded.UnfoldedISTA`, started at
plain FISTA) is trained on

    loss = mean_gt ||x_hat - x||^2 / ||x||^2 + mu * mean_frames ||H x_hat - y||^2 / ||y||^2

where the second (light-field re-synthesis) term uses frames of the recorded series, which have no
ground truth.  Every frame is then reconstructed by the network and averaged inside the footprints.

The network is trained per recording (it learns that recording's cells), so no weights are shipped
for this route; the trained model can be saved with ``model.save(path)``.
"""

from __future__ import annotations

import functools

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.engine.progress import Progress


def two_photon_volumes(footprints: np.ndarray, n_volumes: int, rng: np.random.Generator,
                       background: float = 0.08) -> np.ndarray:
    """Random activity states of the 2P footprints: ``(n_volumes, z, y, x)``, non-negative.

    Each cell has a baseline brightness in [0.6, 1.4] and, with probability 0.3, a calcium transient
    (exponential amplitude, mean 1.5 baselines); a uniform background is added.
    """
    n = len(footprints)
    base = rng.uniform(0.6, 1.4, (n_volumes, n))
    transient = (rng.random((n_volumes, n)) < 0.3) * rng.exponential(1.5, (n_volumes, n))
    activity = base * (1.0 + transient)
    volumes = np.tensordot(activity, footprints, axes=1) + background
    return volumes.astype(np.float32)


def train_on_two_photon_steps(
    light_fields,
    psf,
    footprints: np.ndarray,
    *,
    steps: int = 60,
    n_layers: int = 6,
    n_gt: int = 16,
    batch_gt: int = 2,
    batch_frames: int = 2,
    mu: float = 0.1,
    lr: float = 0.02,
    read_noise: float = 2.0,
    seed: int = 0,
    device: str = "cpu",
    cancel=None,
):
    """Train the unfolded network with 2P-derived ground truth; a steps generator returning (model, log).

    Parameters
    ----------
    light_fields : array-like, shape (t, v, u)
        The recorded series (photo-electrons); random frames feed the re-synthesis loss.
    psf : LFPsf
    footprints : ndarray, shape (n, z, y, x)
        Registered 2P footprints in LFM space.
    steps, n_layers, n_gt, batch_gt, batch_frames, mu, lr : training settings
        ``n_gt`` 2P-derived volumes form the ground-truth set.
    read_noise : float
        Camera read noise used when simulating the ground-truth light fields.
    seed : int
        Seeds the ground-truth set, the frame choice and torch.
    """
    import torch

    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.unfolded import UnfoldedISTA, robust_scale

    footprints = np.asarray(footprints, np.float32)
    if footprints.ndim != 4 or len(footprints) == 0:
        raise InputError("zero neurons: the unfolded route needs 2P footprints in LFM space")
    if steps < 1:
        raise InputError("training needs at least one step")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    H = LFMOperator(psf, device=device)
    if H.n_depths != footprints.shape[1]:
        raise InputError(f"footprints have {footprints.shape[1]} depths but the PSF has {H.n_depths}")
    n_frames = int(light_fields.shape[0])

    # Ground-truth set at the brightness of the recording (total flux of the mean frame).
    volumes = two_photon_volumes(footprints, n_gt, rng)
    with torch.no_grad():
        clean = H.forward(torch.as_tensor(volumes, device=H.weight.device)).cpu().numpy().astype(np.float64)
    sample_frames = np.asarray(light_fields[np.sort(rng.choice(n_frames, min(n_frames, 16), replace=False))], np.float64)
    flux = float(np.clip(sample_frames, 0, None).sum(axis=(1, 2)).mean())
    scale = flux / max(float(clean.sum(axis=(1, 2)).mean()), 1e-12)
    gt_light_fields = rng.poisson(np.clip(clean * scale, 0, None)) + read_noise * rng.standard_normal(clean.shape)
    gt_volumes = volumes * scale
    gt_y = torch.as_tensor(gt_light_fields, dtype=torch.float32, device=H.weight.device)
    gt_x = torch.as_tensor(gt_volumes, dtype=torch.float32, device=H.weight.device)

    model = UnfoldedISTA(H.n_depths, n_layers=n_layers, step=1.0 / H.lipschitz()).to(H.weight.device)
    groups = [{"params": [model.log_step, model.log_threshold], "lr": lr}]
    if model.use_momentum:
        groups.append({"params": [model.momentum], "lr": lr / 4})
    if model.use_correction:
        groups.append({"params": [model.correction_in, model.correction_out], "lr": lr / 10})
    optimiser = torch.optim.Adam(groups)
    log = []
    for step in range(steps):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pick = rng.choice(n_gt, batch_gt, replace=False)
        frames = np.sort(rng.choice(n_frames, batch_frames, replace=False))
        y_frames = torch.as_tensor(np.asarray(light_fields[frames], np.float32), device=H.weight.device)
        y = torch.cat([gt_y[pick], y_frames])
        s = robust_scale(y)
        x_hat = model(H, y) / s.view(-1, 1, 1, 1)
        x_true = gt_x[pick] / s[:batch_gt].view(-1, 1, 1, 1)
        loss_gt = (((x_hat[:batch_gt] - x_true) ** 2).sum((1, 2, 3)) / (x_true**2).sum((1, 2, 3))).mean()
        yn = y / s
        loss_lf = (((H.forward(x_hat) - yn) ** 2).sum((1, 2)) / (yn**2).sum((1, 2))).mean()
        loss = loss_gt + mu * loss_lf
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        entry = {"step": step + 1, "loss": loss.item(), "loss_gt": loss_gt.item(), "loss_lf": loss_lf.item()}
        log.append(entry)
        yield Progress("train unfolded (2P ground truth)", step + 1, steps, f"loss {entry['loss']:.4f}")
    model.eval()
    return model, log


def _make_unfolded_average_fn(device: str, psf, state: dict, config: dict, footprints: np.ndarray):
    import torch

    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.unfolded import UnfoldedISTA

    H = LFMOperator(psf, device=device)
    model = UnfoldedISTA(**config).to(H.weight.device)
    model.load_state_dict(state)
    model.eval()
    weights = np.asarray(footprints, np.float32).reshape(len(footprints), -1)
    weights = torch.as_tensor(weights / np.maximum(weights.sum(1, keepdims=True), 1e-12), device=H.weight.device)

    def fn(block: np.ndarray) -> np.ndarray:
        lead = block.shape[:-2]
        y = torch.as_tensor(np.asarray(block, np.float32).reshape(-1, *block.shape[-2:]), device=H.weight.device)
        with torch.no_grad():
            x = model(H, y.clamp_min(0))
            traces = x.reshape(len(x), -1) @ weights.T
        return traces.cpu().numpy().reshape(*lead, -1)

    return fn


def unfolded_traces_steps(light_fields, psf, model, footprints: np.ndarray, *, device: str = "auto", cancel=None):
    """Reconstruct every frame with the trained network, average inside the footprints: traces ``(n, t)``."""
    import hashlib

    from napari_mbdl.engine import Operation, run_blocks

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    digest = hashlib.sha1(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()[:16]
    op = Operation(
        key=f"fusion-unfolded/{digest}",
        make=functools.partial(_make_unfolded_average_fn, psf=psf, state=state, config=model.config(),
                               footprints=np.asarray(footprints, np.float32)),
        halo=(0,), out_core_shape=(len(footprints),), bytes_per_voxel=64.0, uses_torch=True, min_tile=(1,),
    )
    result = yield from run_blocks(op, light_fields, n_tiled=1, axes="tvu", out_core_axes="c", device=device,
                                   cancel=cancel, stage="unfolded activity")
    return np.asarray(result.array).T.copy(), result.seconds
