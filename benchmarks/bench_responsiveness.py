"""How long the progress bar can freeze, and how long Cancel takes, on a large image on a CPU.

    python benchmarks/bench_responsiveness.py [--size 2048] [--threads 1] [--cancel-after 20] [--cancels 3] [--quick]

The engine runs each call of a block function in a compute thread and reports progress every
``HEARTBEAT_SECONDS`` from what the block function last gave to ``checkpoint``; Cancel stops the
call at its next checkpoint.  Measured in this one run, WINNet sigma 25 on a noisy ``size x size``
float image with the default tile plan:

* the longest gap between two progress events of a whole single-pass run, with the heartbeat
  (as shipped) and, as the baseline, with it turned off (progress only when a tile is done), each
  twice in the order off, on, on, off; the ratio of the two, and the ratio of the run times (the
  faster of each pair: the heartbeat's cost, ~1.0);
* the time from Cancel to the run stopping, for the 8-view self-ensemble cancelled
  ``--cancel-after`` seconds in (and ``--cancels`` - 1 more runs, each 3.7 s later), next to how
  long its first call (batch of tiles) would take: the time a Cancel checked only between tiles
  could have to wait.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def _noisy(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    clean = 0.5 + 0.3 * np.sin(12 * x) * np.cos(9 * y)
    return (clean + rng.normal(0, 25 / 255, clean.shape)).astype(np.float32)


def _timed_run(image, heartbeat: float, self_ensemble: bool = False, cancel_after: float | None = None):
    import napari_mbdl.engine.run as engine_run
    from napari_mbdl.denoise import api
    from napari_mbdl.engine import CancelToken, RunCancelled

    engine_run.HEARTBEAT_SECONDS = heartbeat
    cancel = CancelToken()
    times, chunk_times = [], []
    started = time.perf_counter()
    cancelled_at = None
    timer = None
    if cancel_after is not None:

        def press_cancel():
            nonlocal cancelled_at
            cancelled_at = time.perf_counter()
            cancel.cancel()

        timer = threading.Timer(cancel_after, press_cancel)
        timer.start()
    steps = api.denoise_steps(image, model="winnet", sigma=25, self_ensemble=self_ensemble, cancel=cancel)
    stopped = None
    try:
        for event in steps:
            now = time.perf_counter()
            if event.stage == "denoise":
                times.append(now)
                if event.message.startswith("tile") and "into this step" not in event.message:
                    chunk_times.append(now)
    except RunCancelled:
        stopped = time.perf_counter()
    finally:
        if timer is not None:
            timer.cancel()
    end = time.perf_counter()
    gaps = np.diff([started, *times, end])
    return {
        "seconds": end - started,
        "events": len(times),
        "longest_gap": float(gaps.max()),
        "cancel_latency": None if stopped is None or cancelled_at is None else stopped - cancelled_at,
        "first_call": (chunk_times[0] - times[0]) if chunk_times else None,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--cancel-after", type=float, default=20.0)
    parser.add_argument("--cancels", type=int, default=3, help="how many cancelled runs (at different moments)")
    parser.add_argument("--quick", action="store_true", help="1024 x 1024, cancel after 5 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.cancel_after = 1024, 5.0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import napari_mbdl.engine.run as engine_run

    shipped = engine_run.HEARTBEAT_SECONDS
    image = _noisy(args.size)
    print(f"WINNet sigma 25, {args.size} x {args.size} float32, CPU, {torch.get_num_threads()} thread(s), "
          f"heartbeat {shipped:g} s")
    _timed_run(image[:256, :256], shipped)  # load the model and warm up once, outside the figures
    # off, on, on, off: the first large run pays for page faults, so each setting goes first once;
    # the faster of its two runs is kept
    runs = {"off": [], "on": []}
    for setting in ("off", "on", "on", "off"):
        runs[setting].append(_timed_run(image, 1e6 if setting == "off" else shipped))  # 1e6 s: no heartbeat
    off, on = (min(runs[k], key=lambda r: r["seconds"]) for k in ("off", "on"))
    for name, key in (("heartbeat off (baseline)", "off"), ("heartbeat on", "on")):
        r = runs[key]
        seconds = " / ".join(f"{x['seconds']:.1f}" for x in r)
        print(f"single pass, {name:25s}: {seconds} s, "
              f"{r[0]['events']:3d} progress events, longest gap {max(x['longest_gap'] for x in r):6.1f} s")
    print(f"longest gap, on / off: {on['longest_gap'] / off['longest_gap']:.3f}; "
          f"run time (faster of two), on / off: {on['seconds'] / off['seconds']:.3f}")
    # the ensemble's first call is 8 single-pass views of the same tiles
    first_call = 8 * on["first_call"] if on["first_call"] else float("nan")
    # Cancel at a few moments that fall at different points of a lifting step
    moments = [args.cancel_after + 3.7 * k for k in range(args.cancels)]
    latencies = [_timed_run(image, shipped, self_ensemble=True, cancel_after=m)["cancel_latency"] for m in moments]
    if any(x is None for x in latencies):
        print("self-ensemble: finished before a cancel (use a larger --size)")
    else:
        print(f"self-ensemble cancelled after {', '.join(f'{m:.1f}' for m in moments)} s: stopped "
              f"{', '.join(f'{x:.2f}' for x in latencies)} s after Cancel (longest {max(latencies):.2f} s); "
              f"its first call would take ~{first_call:.0f} s (8 x the single pass's first call): "
              f"longest / first call {max(latencies) / first_call:.4f}")


if __name__ == "__main__":
    main()
