import numpy as np
import pytest
import torch

from napari_mbdl.denoise.nets import PRESETS, InvertibleDenoiser
from napari_mbdl.denoise.train import load_checkpoint, train_steps
from napari_mbdl.denoise.trainer import train_denoiser_steps
from napari_mbdl.denoise.weights import load_weights
from napari_mbdl.engine import InputError, run_steps

SMALL = {**PRESETS["linn"], "channels": 8, "steps": 1}


def _images():
    rng = np.random.default_rng(0)
    return [rng.random((24, 24)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_resumed_training_equals_uninterrupted(tmp_path, suffix):
    torch.manual_seed(0)
    a = InvertibleDenoiser(**SMALL)
    b = InvertibleDenoiser(**SMALL)
    b.load_state_dict(a.state_dict())
    run_steps(train_steps(a, _images(), sigma=(5, 30), steps=4, batch=2, patch=16, seed=3))
    ckpt = tmp_path / f"c{suffix}"
    gen = train_steps(b, _images(), sigma=(5, 30), steps=4, batch=2, patch=16, seed=3, checkpoint=ckpt,
                      checkpoint_every=1, preview_every=1)
    next(gen), next(gen)  # two steps, then the run stops (as if killed)
    state = load_checkpoint(ckpt)
    assert state["step"] == 2
    c = InvertibleDenoiser(**SMALL)
    run_steps(train_steps(c, _images(), sigma=(5, 30), steps=4, batch=2, patch=16, seed=3, state=state,
                          start_step=2))
    for (name, pa), pc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.allclose(pa, pc, atol=1e-6), name


def test_training_reports_finite_losses():
    torch.manual_seed(0)
    net = InvertibleDenoiser(**SMALL)
    events = []
    run_steps(train_steps(net, _images(), sigma=25.0, steps=20, batch=4, patch=16, seed=0, preview_every=1),
              on_progress=events.append)
    losses = [e.preview["loss"] for e in events if e.preview]
    assert len(losses) == 20 and np.isfinite(losses).all()


def test_fine_tune_user_images_writes_loadable_weights(tmp_path):
    rng = np.random.default_rng(0)
    clean = (rng.random((2, 32, 32)) * 255).astype(np.uint8)
    out = tmp_path / "mine.safetensors"
    result = run_steps(train_denoiser_steps(clean, model="linn", init=None, sigma=20.0, steps=3, batch=2,
                                            patch=16, out=out))
    assert result["path"] == out and result["step"] == 3
    model, meta = load_weights(out)
    assert meta["info"]["steps"] == 3 and meta["name"] == "linn"


def test_trainer_bad_input(tmp_path):
    with pytest.raises(InputError):
        run_steps(train_denoiser_steps(np.zeros((8, 8)), init=None, steps=1))
    with pytest.raises(InputError):
        run_steps(train_denoiser_steps(np.zeros((32, 32)), init=None, sigma=500, steps=1))
    with pytest.raises(InputError):
        run_steps(train_denoiser_steps(np.zeros((32, 32)), noisy=np.zeros((30, 30)), init=None, steps=1))
    with pytest.raises(InputError):
        run_steps(train_denoiser_steps(np.zeros((32, 32)), init=tmp_path / "none.safetensors", steps=1))


def test_fine_tune_records_the_device_and_refuses_a_missing_gpu(tmp_path):
    clean = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    out = tmp_path / "cpu.safetensors"
    run_steps(train_denoiser_steps(clean, model="linn", init=None, steps=2, batch=2, patch=16, out=out,
                                   device="cpu"))
    assert load_weights(out)[1]["info"]["device"] == "cpu"
    if not torch.cuda.is_available():
        missing = tmp_path / "gpu.safetensors"
        with pytest.raises(InputError, match="no CUDA GPU"):
            run_steps(train_denoiser_steps(clean, model="linn", init=None, steps=2, out=missing, device="cuda"))
        assert not missing.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_the_gpu_draws_the_same_batches_and_returns_a_cpu_model():
    torch.manual_seed(0)
    a = InvertibleDenoiser(**SMALL)
    b = InvertibleDenoiser(**SMALL)
    b.load_state_dict(a.state_dict())
    on_cpu = run_steps(train_steps(a, _images(), sigma=(5, 30), steps=4, batch=2, patch=16, seed=3))
    on_gpu = run_steps(train_steps(b, _images(), sigma=(5, 30), steps=4, batch=2, patch=16, seed=3, device="cuda"))
    assert all(p.device.type == "cpu" for p in b.parameters())
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-4)


def test_shipped_resume_state_restores_the_shipped_blind_model():
    from napari_mbdl.denoise.train import load_checkpoint
    from napari_mbdl.denoise.weights import WEIGHTS_DIR, shipped_path

    state = load_checkpoint(WEIGHTS_DIR / "resume" / "winnet_blind.safetensors")
    model, meta = load_weights(shipped_path("winnet", None))
    assert state["step"] == state["steps"] == meta["info"]["steps"]
    for key, value in model.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    optimiser = torch.optim.Adam(model.parameters())
    optimiser.load_state_dict(state["optimiser"])  # the Adam moments fit the model


def test_shipped_weights_match_the_training_schedule_and_model_card():
    """Every shipped file is a final stage of the schedule, with the steps, lr and lineage it lists."""
    import json

    from napari_mbdl.denoise.train_schedule import STAGES, is_intermediate
    from napari_mbdl.denoise.weights import WEIGHTS_DIR, read_metadata

    stages = {name: (model, sigma, steps, lr, init) for name, model, sigma, steps, lr, init in STAGES}
    order = [name for name, *_ in STAGES]
    card = json.loads((WEIGHTS_DIR / "model_card.json").read_text())
    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert shipped == sorted(card) and shipped
    for name in shipped:
        model, sigma, steps, lr, init = stages[name]  # a shipped file must be a schedule stage
        assert not is_intermediate(name), "intermediate rounds are not shipped"
        info = read_metadata(WEIGHTS_DIR / f"{name}.safetensors")["info"]
        assert (info["steps"], info["lr"], str(info["sigma"])) == (steps, lr, sigma) == (
            card[name]["steps"], card[name]["lr"], str(card[name]["sigma"]))
        if init is None:
            assert "initialised_from" not in info and info["total_steps"] == steps
        else:
            assert order.index(init) < order.index(name)
            assert info["initialised_from"]["file"] == f"{init}.safetensors"
            assert info["total_steps"] == info["initialised_from"]["total_steps"] + steps


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no GPU")
def test_training_script_refuses_a_missing_gpu_before_reading_data(tmp_path, capsys):
    from napari_mbdl.denoise.train import main

    out = tmp_path / "w.safetensors"
    code = main(["--model", "linn", "--device", "cuda", "--data", str(tmp_path / "absent"), "--checkpoint",
                 str(tmp_path / "c.pt"), "--out", str(out)])
    assert code == 2 and "no CUDA GPU" in capsys.readouterr().err and not out.exists()
