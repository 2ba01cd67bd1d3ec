"""X-ray separation benchmark: quality on a synthetic double-sided panel, and time at 2048 x 2048.

Prints, for side information from one side and from both sides:

* PSNR / SSIM of each separated side against the truth, for
  (a) the fitted grey-level mapping of the photograph of side 1, side 2 = mixture - side 1;
  (a2) with both photographs: both sides from their fitted grey-level mappings;
  (r) the network's starting point: the photographs' renderings fitted to the mixture, i.e. the
      method with no training step of the unfolded layers;
  (b) the model without its exclusion term: no exclusion step in the layers, no exclusion loss
      and, with two photographs, what the renderings leave of the mixture shared half and half;
  (b') with one photograph: the exclusion step in the layers but no exclusion loss;
  (e) with one photograph: the exclusion step in the layers as well as the exclusion loss; with
      two: the exclusion loss of the one-photograph default added to the method;
  (c) the method, its defaults: with one photograph the exclusion loss (weight 0.005) and no
      exclusion step; with two the exclusion split of the rest (by the sides' edge energy) and no
      exclusion loss;
* "noDC": PSNR after removing each side's mean error.  A constant can always be traded between
  the two sides (the mixture fixes only their sum), so this shows the structure separately from
  the constant chosen by the convention "side 2's darkest 1% is at zero";
* "kept": the training iteration whose network the method keeps (lowest self-supervised loss on
  a fixed lattice of evaluation patches over the painting); 0 means no training step improved on
  the start (r), which is kept;
* the time to train and to separate a 2048 x 2048 mixture on this machine's CPU (and on a GPU
  when one is present).

Run: ``python benchmarks/bench_xray.py [--panel NAME] [--size 256] [--iterations 300] [--threads 1]
[--photographs one|both|all] [--rows b,c] [--seed N] [--skip-timing | --timing-only]``.
``--rows`` limits the trained rows (the untrained ones, (a), (a2) and (r), are always printed), so
the method and the model without exclusion can be compared over several seeds at a lower cost.
All data are generated here from scikit-image photographs; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

# Pu, Huang et al., IEEE TIP 31:4458-4473 (2022), arXiv 2201.09167, evaluate the method on real
# paintings (Goya's "Dona Isabel de Porcel") and on synthetic mixtures.  Their numeric tables could
# not be retrieved on this offline machine, so none is quoted here rather than a figure from
# memory (see docs/xray.md).
PAPER_REPORTED = None


def scores(estimate, truth):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    estimate = np.asarray(estimate, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    data_range = float(truth.max() - truth.min())
    centred = (estimate - estimate.mean()) - (truth - truth.mean())
    return {
        "psnr": peak_signal_noise_ratio(truth, estimate, data_range=data_range),
        "ssim": structural_similarity(truth, estimate, data_range=data_range),
        "psnr_nodc": 10 * np.log10(data_range**2 / np.mean(centred**2)),
    }


def row(name, side1, side2, panel, seconds=None, kept=None):
    s1, s2 = scores(side1, panel.xray1), scores(side2, panel.xray2)
    timing = f"{seconds:7.1f}" if seconds is not None else "      -"
    kept = f"{kept:5d}" if kept is not None else "    -"
    print(f"  {name:38s} {s1['psnr']:6.2f} {s1['ssim']:6.3f} {s1['psnr_nodc']:6.2f} | "
          f"{s2['psnr']:6.2f} {s2['ssim']:6.3f} {s2['psnr_nodc']:6.2f} | {timing} | {kept}", flush=True)
    return s1, s2


def starting_point(panel, config, two_sided):
    """(r): the network's starting point, the photographs' renderings fitted to the mixture.

    It is what the method returns with no training step (``iterations=0``), with the method's
    own split of what the renderings leave of the mixture and its level convention, so (c) minus
    (r) is exactly what the unfolded training adds.
    """
    from napari_mbdl.xray_separation.api import separate_xray

    result = separate_xray(panel.mixed, panel.rgb1, panel.rgb2 if two_sided else None,
                           config=replace(config, iterations=0), device="cpu")
    return result.side1, result.side2


def main() -> None:
    from napari_mbdl.xray_separation.synthetic import PANELS  # numpy only: cheap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic panel")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--timing-size", type=int, default=2048)
    parser.add_argument("--timing-iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panel", choices=list(PANELS), default="default",
                        help="held-out: photographs never used to tune the method's settings")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true", help="only the 2048 x 2048 timing")
    parser.add_argument("--photographs", choices=("one", "both", "all"), default="all",
                        help="side information to benchmark: side 1's photograph, both, or each in turn")
    parser.add_argument("--rows", default="b,b',e,c",
                        help="trained rows to run, comma-separated from b, b', e, c (b and c are always run)")
    args = parser.parse_args()
    rows = {r.strip() for r in args.rows.split(",") if r.strip()} | {"b", "c"}
    unknown = rows - {"b", "b'", "e", "c"}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))} (choose from b, b', e, c)")

    import torch

    from napari_mbdl.engine import run_steps
    from napari_mbdl.xray_separation.api import separate_xray, separate_xray_steps
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel
    from napari_mbdl.xray_separation.training import SeparationConfig, fit_normalisation, grey_mapping

    torch.set_num_threads(args.threads)
    panel = make_double_sided_panel(args.size, panel=args.panel)
    front, back = PANELS[args.panel]
    print(f"synthetic panel '{args.panel}' {args.size}x{args.size}: side 1 = skimage {front}, side 2 = "
          f"skimage {back} (mirrored); torch {torch.__version__}, {args.threads} CPU thread(s), {args.iterations} training "
          f"iterations, seed {args.seed}")
    header = (f"  {'method':38s} {'PSNR':>6s} {'SSIM':>6s} {'noDC':>6s} | {'PSNR':>6s} {'SSIM':>6s} "
              f"{'noDC':>6s} | {'time s':>7s} | {'kept':>5s}")
    cases = {"one": (False,), "both": (True,), "all": (False, True)}[args.photographs]
    for two_sided in () if args.timing_only else cases:
        print(f"\n== side information: {'both photographs' if two_sided else 'photograph of side 1 only'} ==")
        print(f"  {'':38s} {'------ side 1 ------':>20s} | {'------ side 2 ------':>20s} |")
        print(header)
        norm = fit_normalisation(panel.mixed, panel.rgb1)
        side1 = grey_mapping(panel.rgb1, norm.mapping1) * norm.span + norm.low
        results = {"a": row("(a) grey mapping, side2 = mix - side1", side1, panel.mixed - side1, panel)}
        if two_sided:
            both = fit_normalisation(panel.mixed, panel.rgb1, panel.rgb2)
            s1 = grey_mapping(panel.rgb1, both.mapping1) * both.span + both.low
            s2 = grey_mapping(panel.rgb2, both.mapping2) * both.span
            results["a2"] = row("(a2) grey mappings of both photographs", s1, s2, panel)
        config = SeparationConfig(iterations=args.iterations, seed=args.seed, preview_every=50)
        results["r"] = row("(r) the start: fitted renderings",
                           *starting_point(panel, config, two_sided), panel)
        weight = config.exclusion_weight(two_sided)
        variants = [("b", "(b) unfolded net without exclusion", replace(config, weight_exclusion=0.0))]
        if weight > 0:
            variants.append(("b'", "(b') exclusion step, no exclusion loss",
                             replace(config, weight_exclusion=0.0, exclusion_step=True)))
            variants.append(("e", f"(e) exclusion step and loss {weight:g}", replace(config, exclusion_step=True)))
            variants.append(("c", f"(c) the method (exclusion loss {weight:g})", config))
        else:  # the default has no exclusion loss here: show what the one-photograph weight adds
            one = config.exclusion_weight(two_sided=False)
            variants.append(("c", "(c) the method (exclusion split)", config))
            variants.append(("e", f"(e) split and exclusion loss {one:g}", replace(config, weight_exclusion=one)))
        for key, name, variant in [v for v in variants if v[0] in rows]:
            start = time.perf_counter()
            result = separate_xray(panel.mixed, panel.rgb1, panel.rgb2 if two_sided else None,
                                   config=variant, device="cpu")
            results[key] = row(name, result.side1, result.side2, panel, time.perf_counter() - start,
                               result.trained.best_iteration)
        base = results["a2" if two_sided else "a"]
        for metric in ("psnr", "psnr_nodc"):
            over_a = [results["c"][i][metric] - base[i][metric] for i in (0, 1)]
            over_b = [results["c"][i][metric] - results["b"][i][metric] for i in (0, 1)]
            over_r = [results["c"][i][metric] - results["r"][i][metric] for i in (0, 1)]
            print(f"  {metric}: (c) minus {'(a2)' if two_sided else '(a)'}: {over_a[0]:+.2f} / {over_a[1]:+.2f} dB; "
                  f"(c) minus (b): {over_b[0]:+.2f} / {over_b[1]:+.2f} dB; "
                  f"(c) minus (r): {over_r[0]:+.2f} / {over_r[1]:+.2f} dB (side 1 / side 2)")
    print(f"\npaper's reported numbers: {PAPER_REPORTED or 'not available offline (see docs/xray.md)'}")

    if args.skip_timing:
        return
    # -- timing: train, then separate a large mixture tile by tile through the engine ------------------
    size = args.timing_size
    big = make_double_sided_panel(size)
    config = SeparationConfig(iterations=args.timing_iterations, seed=args.seed, preview_every=args.timing_iterations)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        marks = {}
        start = time.perf_counter()

        def on_progress(event, marks=marks, start=start):
            if event.stage == "separating" and "training" not in marks:
                marks["training"] = time.perf_counter() - start

        result = run_steps(separate_xray_steps(big.mixed, big.rgb1, config=config, device=device), on_progress)
        total = time.perf_counter() - start
        print(f"{size}x{size} on {device}: training {config.iterations} iterations {marks['training']:.1f} s; "
              f"full-image separation {result.run.seconds:.1f} s ({result.run.chunks_total} tiles of "
              f"{result.run.tile}, halo {config.halo}); whole call {total:.1f} s", flush=True)
    if not torch.cuda.is_available():
        print("no GPU on this machine: GPU timing not measured")


if __name__ == "__main__":
    main()
