from dataclasses import replace

import numpy as np
import pytest

from napari_mbdl.engine import CancelToken, InputError, run_steps
from napari_mbdl.xray_separation.training import SeparationConfig

FAST = SeparationConfig(iterations=3, n_layers=2, n_atoms=4, patch_size=32, batch_size=2, preview_every=2,
                        rendering_iterations=20)


def test_panel_is_a_sum_of_two_different_sides(panel):
    assert panel.mixed.shape == (64, 64) and panel.rgb1.shape == (64, 64, 3)
    assert np.abs(panel.mixed - panel.xray1 - panel.xray2).max() < 0.02  # only detector noise
    assert np.corrcoef(panel.xray1.ravel(), panel.xray2.ravel())[0, 1] < 0.5
    for side in (panel.xray1, panel.xray2):
        assert abs(np.percentile(side, 1)) < 1e-3 and side.max() == pytest.approx(0.5)


def test_exclusion_loss_prefers_the_true_split_and_vanishes_without_shared_edges(panel):
    import torch

    from napari_mbdl.xray_separation.model import gradient_exclusion
    from napari_mbdl.xray_separation.training import fit_normalisation, grey_mapping

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
    norm = fit_normalisation(panel.mixed, panel.rgb1)
    side1 = grey_mapping(panel.rgb1, norm.mapping1) * norm.span + norm.low
    truth = float(gradient_exclusion(t(panel.xray1), t(panel.xray2)))
    baseline = float(gradient_exclusion(t(side1), t(panel.mixed - side1)))
    assert truth < baseline
    assert float(gradient_exclusion(t(panel.mixed), t(np.zeros_like(panel.mixed)))) == 0.0


def test_grey_mapping_puts_the_darkest_percent_of_side_2_at_zero(panel):
    from napari_mbdl.xray_separation.training import fit_normalisation, grey_mapping

    norm = fit_normalisation(panel.mixed, panel.rgb1)
    side1 = grey_mapping(panel.rgb1, norm.mapping1) * norm.span + norm.low
    assert abs(np.percentile(panel.mixed - side1, 1.0)) < 1e-3
    both = fit_normalisation(panel.mixed, panel.rgb1, panel.rgb2)
    assert abs(np.percentile(grey_mapping(panel.rgb2, both.mapping2), 1.0)) < 1e-3


@pytest.mark.parametrize("two_sided", [False, True])
def test_halo_covers_the_receptive_field(two_sided):
    import torch

    from napari_mbdl.xray_separation.model import UnfoldedSeparator

    torch.manual_seed(0)
    # with the exclusion step (and, with two photographs, the exclusion split of the rest), the
    # widest receptive field the network can have
    model = UnfoldedSeparator(n_layers=2, n_atoms=4, kernel_size=5, two_sided=two_sided, exclusion_step=True,
                              exclusion_split=True).eval()
    for p in model.parameters():  # make every path active
        p.data.add_(0.05 * torch.randn_like(p))
    model.split_floor.fill_(1e-3)
    size, centre = 96, 48
    inputs = {"x": torch.rand(1, 1, size, size), "rgb1": torch.rand(1, 3, size, size)}
    inputs["linear1"] = inputs["rgb1"].mean(1, keepdim=True)
    if two_sided:
        inputs["rgb2"] = torch.rand(1, 3, size, size)
        inputs["linear2"] = inputs["rgb2"].mean(1, keepdim=True)
    base = model(**inputs)
    radius = UnfoldedSeparator.receptive_radius(2, 5, exclusion_split=two_sided)
    for name in inputs:  # a change of any input pixel reaches at most the radius, in both outputs
        bumped = dict(inputs)
        bumped[name] = inputs[name].clone()
        bumped[name][..., centre, centre] += 1.0
        changed = sum((a - b).abs() for a, b in zip(model(**bumped), base))[0, 0] > 1e-7
        rows, cols = np.nonzero(changed.numpy())
        reach = max(np.abs(rows - centre).max(), np.abs(cols - centre).max())
        assert 0 < reach <= radius, name


def test_exclusion_split_gives_the_rest_to_the_side_with_edges_there():
    import torch

    from napari_mbdl.xray_separation.model import edge_share

    size = 64
    rendering1 = torch.zeros(1, 1, size, size)
    rendering1[..., :, size // 2 :] = 1.0  # side 1: one vertical edge in the middle
    rendering2 = torch.zeros(1, 1, size, size)
    rendering2[..., size // 4 :, :] = 1.0  # side 2: one horizontal edge at a quarter
    share = edge_share(rendering1, rendering2, floor=1e-3)[0, 0]
    assert share[40, size // 2] > 0.95  # on side 1's edge, far from side 2's
    assert share[size // 4, 10] < 0.05  # on side 2's edge, far from side 1's
    assert share[50, 10] == pytest.approx(0.5)  # flat in both: half each
    flat = edge_share(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), floor=0.0)
    assert torch.equal(flat, torch.full_like(flat, 0.5))  # no 0 / 0


def test_split_floor_is_the_painting_edge_energy_not_the_patch_border():
    import torch

    from napari_mbdl.xray_separation.model import UnfoldedSeparator, edge_energy

    model = UnfoldedSeparator(n_layers=1, n_atoms=2, two_sided=True, exclusion_split=True)
    size = 32
    flat = torch.full((2, 3, size, size), 0.5)  # untrained renderings: the linear maps themselves
    model.set_split_floor(flat, flat[:, :1], flat, flat[:, :1])
    assert float(model.split_floor) == 0.0  # a flat painting has no edges, whatever the padding
    assert float(edge_energy(flat[:, :1]).mean()) > 0.0  # ... which the patch border would add
    stripes = flat[:, :1].clone()
    stripes[..., 0::4] = 0.0  # vertical stripes 2 pixels wide on side 1: a central difference
    stripes[..., 1::4] = 0.0  # of +-0.5 / 2, so energy 0.0625, on every pixel inside
    model.set_split_floor(flat, stripes, flat, flat[:, :1])
    assert float(model.split_floor) == pytest.approx(0.5 * 0.0625, rel=1e-5)


def test_exclusion_split_is_used_with_two_photographs_unless_exclusion_is_off(panel):
    from napari_mbdl.xray_separation.api import separate_xray
    from napari_mbdl.xray_separation.training import load_model

    config = SeparationConfig()
    assert config.exclusion_split_in_effect(two_sided=True)
    assert not config.exclusion_split_in_effect(two_sided=False)  # one photograph: no rest to share
    assert not replace(config, weight_exclusion=0.0).exclusion_split_in_effect(two_sided=True)
    assert not replace(config, exclusion_split=False).exclusion_split_in_effect(two_sided=True)
    split = separate_xray(panel.mixed, panel.rgb1, panel.rgb2, config=replace(FAST, iterations=0), device="cpu")
    half = separate_xray(panel.mixed, panel.rgb1, panel.rgb2, config=replace(FAST, iterations=0, weight_exclusion=0.0),
                         device="cpu")
    assert load_model(split.trained, "cpu").exclusion_split and split.trained.state["split_floor"] > 0
    assert not load_model(half.trained, "cpu").exclusion_split
    # same renderings, same mixture: only how the rest is shared differs (the untrained layers
    # are close to, not exactly, a no-op)
    np.testing.assert_allclose(split.side1 + split.side2, half.side1 + half.side2, atol=2e-3)
    assert np.abs(split.side1 - half.side1).max() > 1e-2


def test_rendering_loss_compares_gradients_unless_told_otherwise():
    import torch

    from napari_mbdl.xray_separation.model import UnfoldedSeparator, rendering_loss

    torch.manual_seed(0)
    model = UnfoldedSeparator(1, 2, 3)
    rgb, x = torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16)
    model.render(rgb, x.clone())
    assert rendering_loss(model, x, scales=2, intensity_weight=0.0).item() < 1e-12  # a perfect fit
    # gradients ignore a constant; the plain difference (scales=0) and the intensity term do not
    shifted = x + 0.1
    assert rendering_loss(model, shifted, scales=2, intensity_weight=0.0).item() < 1e-12
    assert rendering_loss(model, shifted, scales=0, intensity_weight=0.0).item() == pytest.approx(0.01, rel=1e-4)
    assert rendering_loss(model, shifted, scales=2, intensity_weight=0.5).item() == pytest.approx(0.005, rel=1e-4)
    # a rescaled mixture is penalised at every scale
    assert rendering_loss(model, 2 * x, scales=2, intensity_weight=0.0).item() > 0.01


def test_exclusion_step_can_be_left_out_of_the_layers():
    import torch

    from napari_mbdl.xray_separation.model import UnfoldedSeparator

    torch.manual_seed(0)
    x, rgb, linear = torch.rand(1, 1, 24, 24), torch.rand(1, 3, 24, 24), torch.rand(1, 1, 24, 24)
    for step in (True, False):
        model = UnfoldedSeparator(2, 4, 5, exclusion_step=step)
        x1, x2 = model(x, rgb, linear)
        (x1.square().sum() + 2 * x2.square().sum()).backward()
        gradients = [layer.exclusion.grad for layer in model.layers]
        # the exclusion thresholds take part only when the layers have the exclusion step
        assert all((g is not None and g.abs().sum() > 0) == step for g in gradients)


def test_tiled_separation_equals_whole_image_with_two_photographs(panel):
    from napari_mbdl.xray_separation.api import separate_xray
    from napari_mbdl.xray_separation.training import load_model, separate_block

    result = separate_xray(panel.mixed, panel.rgb1, panel.rgb2, config=FAST, device="cpu", tile=(32, 32))
    assert result.run.chunks_total == 4
    model = load_model(result.trained, "cpu")
    assert model.exclusion_split  # its floor is the painting's, not each tile's
    whole = separate_block(result.trained, model, "cpu", panel.mixed[None], panel.rgb1[None], panel.rgb2[None])[0]
    np.testing.assert_allclose(np.moveaxis(whole, -1, 0), result.stacked, atol=1e-5)
    # level convention: side 2's mean is that of its start (its rendering plus its share of the
    # rest), with the start's darkest 1% at zero
    import torch

    from napari_mbdl.xray_separation.model import edge_share
    from napari_mbdl.xray_separation.training import prepare_tensors

    norm = result.trained.normalisation
    t = prepare_tensors(panel.mixed[None], panel.rgb1[None], panel.rgb2[None], norm, "cpu")
    with torch.no_grad():
        renderings = model.render(t["rgb1"], t["linear1"], t["rgb2"], t["linear2"])
        share = edge_share(*renderings, model.split_floor)
        start = (renderings[1] + (1 - share) * (t["x"] - renderings[0] - renderings[1]))[0, 0].numpy() * norm.span
    assert result.side2.mean() == pytest.approx(start.mean() - np.percentile(start, 1.0), abs=1e-4)


def test_tiled_separation_equals_whole_image(panel):
    from napari_mbdl.xray_separation.api import separate_xray
    from napari_mbdl.xray_separation.training import load_model, prepare_tensors, separate_block

    result = separate_xray(panel.mixed, panel.rgb1, config=FAST, device="cpu", tile=(32, 32))
    assert result.run.chunks_total == 4
    model = load_model(result.trained, "cpu")
    whole = separate_block(result.trained, model, "cpu", panel.mixed[None], panel.rgb1[None])[0]
    np.testing.assert_allclose(np.moveaxis(whole, -1, 0), result.stacked, atol=1e-5)
    # the three outputs add up to the mixture exactly
    np.testing.assert_allclose(result.side1 + result.side2 + result.error, panel.mixed, atol=1e-5)
    # level convention: side 2's mean is that of what side 1's fitted rendering leaves of the
    # mixture, with that rest's darkest 1% at zero (the common level belongs to side 1)
    norm = result.trained.normalisation
    t = prepare_tensors(panel.mixed[None], panel.rgb1[None], None, norm, "cpu")
    rest = panel.mixed - norm.low - model.render(t["rgb1"], t["linear1"])[0][0, 0].detach().numpy() * norm.span
    assert result.side2.mean() == pytest.approx(rest.mean() - np.percentile(rest, 1.0), abs=1e-4)


def test_training_lowers_the_loss_and_keeps_the_best_state(panel):
    from napari_mbdl.xray_separation.training import train_separator_steps

    config = SeparationConfig(iterations=40, n_layers=2, n_atoms=8, patch_size=32, batch_size=4, preview_every=4)
    previews = []
    trained = run_steps(train_separator_steps(panel.mixed, panel.rgb1, None, config),
                        lambda e: previews.append(e.preview) if e.preview is not None else None)
    losses = [h["loss"] for h in trained.history]
    # the start (the fitted renderings) re-synthesises the mixture exactly, so the first Adam
    # steps raise the loss; training must then bring it down again
    assert losses[-1] < 0.7 * losses[1]
    assert trained.iterations_done == 40 and not trained.stopped_early
    assert len(previews) == 11 and previews[-1]["side1"].shape == (64, 64)
    best = min(trained.history, key=lambda h: h["loss"])
    assert trained.best_iteration == best["iteration"]


def test_the_network_of_the_lowest_evaluation_loss_is_kept(panel):
    from napari_mbdl.xray_separation.training import train_separator_steps

    # with the exclusion step in the layers the start no longer re-synthesises the mixture
    # exactly, so training improves on it
    config = SeparationConfig(iterations=40, n_layers=2, n_atoms=8, patch_size=32, batch_size=4, preview_every=4,
                              exclusion_step=True)
    trained = run_steps(train_separator_steps(panel.mixed, panel.rgb1, None, config))
    best = min(trained.history, key=lambda h: h["loss"])
    assert trained.best_iteration == best["iteration"] > 0 and best["loss"] < trained.history[0]["loss"]
    assert f"kept the network of iteration {best['iteration']} (loss {best['loss']:.5f})" in trained.summary()


def test_summary_says_when_no_training_step_beat_the_start(panel):
    from napari_mbdl.xray_separation.training import train_separator_steps

    untrained = run_steps(train_separator_steps(panel.mixed, panel.rgb1, None, replace(FAST, iterations=0)))
    assert untrained.best_iteration == 0 and "separated with the fitted renderings" in untrained.summary()
    # a learning rate far too high: every step is worse than the start, which must be kept
    wild = run_steps(train_separator_steps(panel.mixed, panel.rgb1, None, replace(FAST, learning_rate=1.0)))
    assert wild.best_iteration == 0 and wild.iterations_done == FAST.iterations
    assert "no step improved on the fitted renderings" in wild.summary()


def test_stop_training_separates_with_the_best_state_so_far(panel):
    from napari_mbdl.xray_separation.api import separate_xray_steps

    stop = CancelToken()
    steps = separate_xray_steps(panel.mixed, panel.rgb1, config=FAST, device="cpu", stop_training=stop)
    stop.cancel()
    result = run_steps(steps)
    assert result.trained.stopped_early and result.trained.iterations_done == 0
    assert result.side1.shape == (64, 64)


def test_cancel_stops_everything(panel):
    from napari_mbdl.engine import RunCancelled
    from napari_mbdl.xray_separation.api import separate_xray_steps

    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(RunCancelled):
        run_steps(separate_xray_steps(panel.mixed, panel.rgb1, config=FAST, device="cpu", cancel=cancel))


def test_two_sided_and_integer_photographs(panel):
    from napari_mbdl.xray_separation.api import separate_xray

    as_float = separate_xray(panel.mixed, panel.rgb1, panel.rgb2, config=FAST, device="cpu")
    rgb1_u8 = np.round(panel.rgb1 * 255).astype(np.uint8)
    rgb2_u8 = np.round(panel.rgb2 * 255).astype(np.uint8)
    as_u8 = separate_xray(panel.mixed, rgb1_u8, rgb2_u8, config=FAST, device="cpu")
    assert as_float.trained.two_sided
    np.testing.assert_allclose(as_float.side2, as_u8.side2, atol=0.02)


def test_writes_ome_zarr_and_leaves_inputs_untouched(panel, tmp_path):
    from napari_mbdl.io.arrays import open_array
    from napari_mbdl.xray_separation.api import separate_xray

    mixed, rgb1 = panel.mixed.copy(), panel.rgb1.copy()
    result = separate_xray(mixed, rgb1, config=FAST, device="cpu", out=tmp_path / "sep.zarr")
    np.testing.assert_array_equal(mixed, panel.mixed)
    np.testing.assert_array_equal(rgb1, panel.rgb1)
    stored = open_array(tmp_path / "sep.zarr")
    assert stored.shape == (3, 64, 64) and stored.axes == "cyx"
    np.testing.assert_allclose(np.asarray(stored.data), np.asarray(result.stacked))


@pytest.mark.parametrize(
    "mixed, rgb1, message",
    [
        (lambda p: p.mixed, lambda p: p.rgb1.mean(-1), "greyscale"),
        (lambda p: p.rgb1, lambda p: p.rgb1, "must be greyscale"),
        (lambda p: p.mixed[:60], lambda p: p.rgb1, "align it first"),
        (lambda p: np.full((64, 64), 0.3, np.float32), lambda p: p.rgb1, "constant"),
        (lambda p: p.mixed, lambda p: np.full((64, 64, 3), 0.5, np.float32), "constant"),
        (lambda p: np.where(np.eye(64, dtype=bool), np.nan, p.mixed), lambda p: p.rgb1, "NaN"),
        (lambda p: p.mixed, lambda p: np.roll(p.rgb1, (6, -5), (0, 1)), "does not line up"),
        (lambda p: p.mixed, lambda p: p.rgb1[..., :2], "RGB"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(panel, mixed, rgb1, message):
    from napari_mbdl.xray_separation.api import separate_xray

    with pytest.raises(InputError, match=message):
        separate_xray(mixed(panel), rgb1(panel), config=FAST, device="cpu")


def test_fitted_renderings_recover_the_sides_better_than_linear_mappings():
    """The renderings fitted to the mixture (the network's starting point) beat (a2) clearly.

    A hidden side is independent of the other side's photograph, so regressing the mixture on the
    photographs recovers each side's non-linear X-ray rendering; a linear grey mapping cannot.
    """
    from napari_mbdl.xray_separation.api import separate_xray
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel
    from napari_mbdl.xray_separation.training import fit_normalisation, grey_mapping, load_model, prepare_tensors

    panel = make_double_sided_panel(128)
    trained = separate_xray(panel.mixed, panel.rgb1, panel.rgb2, config=SeparationConfig(iterations=0),
                            device="cpu").trained
    norm = trained.normalisation
    t = prepare_tensors(panel.mixed[None], panel.rgb1[None], panel.rgb2[None], norm, "cpu")
    renderings = load_model(trained, "cpu").render(t["rgb1"], t["linear1"], t["rgb2"], t["linear2"])
    linear = fit_normalisation(panel.mixed, panel.rgb1, panel.rgb2)
    for rendering, mapping, rgb, truth in zip(renderings, (linear.mapping1, linear.mapping2),
                                              (panel.rgb1, panel.rgb2), (panel.xray1, panel.xray2)):
        def psnr(a):
            error = (a - a.mean()) - (truth - truth.mean())
            return 10 * np.log10(float(truth.max() - truth.min()) ** 2 / float(np.mean(error**2)))

        fitted = rendering[0, 0].detach().numpy() * norm.span
        assert psnr(fitted) > psnr(grey_mapping(rgb, mapping) * linear.span) + 3.0


def test_gradient_fit_with_one_photograph_recovers_side_1_better_than_a_grey_mapping():
    """With one photograph the hidden side is the regression's noise; fitting gradients whitens it.

    On the 128 x 128 panel the plain (intensity) fit is no better than the grey mapping (a), while
    the default two-scale gradient fit recovers side 1's structure far better.
    """
    from napari_mbdl.xray_separation.api import separate_xray
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel
    from napari_mbdl.xray_separation.training import fit_normalisation, grey_mapping, load_model, prepare_tensors

    panel = make_double_sided_panel(128)

    def structure_psnr(estimate):
        error = (estimate - estimate.mean()) - (panel.xray1 - panel.xray1.mean())
        return 10 * np.log10(float(np.ptp(panel.xray1)) ** 2 / float(np.mean(error**2)))

    def fitted_side1(config):
        trained = separate_xray(panel.mixed, panel.rgb1, config=config, device="cpu").trained
        norm = trained.normalisation
        t = prepare_tensors(panel.mixed[None], panel.rgb1[None], None, norm, "cpu")
        return structure_psnr(load_model(trained, "cpu").render(t["rgb1"], t["linear1"])[0][0, 0].detach().numpy())

    gradients = fitted_side1(SeparationConfig(iterations=0))
    intensity = fitted_side1(SeparationConfig(iterations=0, rendering_scales=0))
    linear = structure_psnr(grey_mapping(panel.rgb1, fit_normalisation(panel.mixed, panel.rgb1).mapping1))
    assert gradients > max(intensity, linear) + 3.0, (gradients, intensity, linear)


def test_rendering_fit_reports_progress_and_stops_on_cancel(panel):
    from napari_mbdl.xray_separation.training import train_separator_steps

    messages = []
    run_steps(train_separator_steps(panel.mixed, panel.rgb1, None, replace(FAST, rendering_iterations=250)),
              lambda e: messages.append(e.message))
    fits = [m for m in messages if m.startswith("fitting the photographs'")]
    assert fits == [f"fitting the photographs' X-ray renderings ({n}/250)" for n in (0, 100, 200)]

    cancel = CancelToken()
    steps = train_separator_steps(panel.mixed, panel.rgb1, None, replace(FAST, rendering_iterations=10_000),
                                  cancel=cancel)
    next(steps)  # the first rendering-fit event; cancel before the fit runs
    cancel.cancel()
    trained = run_steps(steps)
    assert trained.stopped_early and trained.iterations_done == 0


def test_automatic_exclusion_weight_depends_on_the_photographs_given():
    assert SeparationConfig().exclusion_weight(two_sided=False) == 0.005
    assert SeparationConfig().exclusion_weight(two_sided=True) == 0.0
    assert SeparationConfig(weight_exclusion=0.05).exclusion_weight(two_sided=True) == 0.05
    assert SeparationConfig().rendering_fit_scales(two_sided=False) == 2
    # the exclusion term acts through the loss; the exclusion step in the layers is opt-in
    assert not SeparationConfig().exclusion_step
    assert SeparationConfig().rendering_fit_scales(two_sided=True) == 0


def test_negative_loss_weights_are_refused(panel):
    from napari_mbdl.xray_separation.api import separate_xray

    with pytest.raises(InputError, match="weights cannot be negative"):
        separate_xray(panel.mixed, panel.rgb1, config=replace(FAST, weight_exclusion=-0.1), device="cpu")
    with pytest.raises(InputError, match="weights cannot be negative"):
        separate_xray(panel.mixed, panel.rgb1, config=replace(FAST, rendering_intensity_weight=-1.0), device="cpu")
    with pytest.raises(InputError, match="scales cannot be negative"):
        separate_xray(panel.mixed, panel.rgb1, config=replace(FAST, rendering_scales=-1), device="cpu")


def test_the_kept_network_is_judged_on_patches_covering_the_whole_painting(monkeypatch):
    from napari_mbdl.xray_separation import training
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel

    # a few random patches made the choice of the kept network follow their content: the
    # evaluation patches must reach every pixel, corners included, whatever the seed
    panel = make_double_sided_panel(160)
    calls = []
    read = training._read_patches
    monkeypatch.setattr(training, "_read_patches",
                        lambda arrays, corners, size: calls.append((list(corners), size)) or read(arrays, corners, size))
    run_steps(training.train_separator_steps(panel.mixed, panel.rgb1, None, replace(FAST, iterations=0, seed=3)))

    def covered(corners, size):
        mask = np.zeros(panel.mixed.shape, dtype=bool)
        for r, c in corners:
            mask[r : r + size[0], c : c + size[1]] = True
        return mask.all()

    evaluation = [(corners, size) for corners, size in calls if size == (training.EVALUATION_PATCH,) * 2
                  and covered(corners, size)]
    assert len(evaluation) == 1
    corners, _ = evaluation[0]
    assert len(corners) == 16 and (0, 0) in corners and (160 - 64, 160 - 64) in corners
