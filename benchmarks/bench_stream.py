"""Streaming engine figures (issue 2), all measured in one run.

1. Throughput of the engine streaming a 2 GB and a 4 GB zarr through a cheap per-chunk operation,
   as a ratio to a plain chunk-by-chunk zarr read + write of the same data (goal >= 0.8).
2. Peak resident memory of each engine run (goal < 1 GB, and 4 GB within 10% of 2 GB), measured
   in a fresh subprocess per run so the figures do not mix.
3. Time to ``import napari_mbdl`` and to list its widgets through npe2, and whether torch got imported.

Usage: python benchmarks/bench_stream.py [--sizes 2,4] [--workdir .bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHUNK = (1, 1024, 1024)  # 2 MiB of uint16 per chunk


def _make_input(path: Path, gigabytes: float) -> None:
    import numpy as np
    import zarr

    if (path / ".zarray").exists():
        return
    planes = int(gigabytes * 1e9 / (1024 * 1024 * 2))
    array = zarr.open_array(str(path), mode="w", shape=(planes, 1024, 1024), chunks=CHUNK, dtype="u2", zarr_format=2)
    rng = np.random.default_rng(0)
    for i in range(planes):  # noisy data: compresses poorly, like real camera frames
        array[i] = rng.integers(0, 4096, size=(1024, 1024), dtype=np.uint16)


def _cheap_op(device):
    import numpy as np

    def scale_offset(block):
        return (block.astype(np.float32) * 0.5 + 1.0).astype(np.uint16)

    return scale_offset


def _child(mode: str, source: str, target: str) -> dict:
    """Run one measurement; report seconds and peak RSS (this process only)."""
    import resource

    import numpy as np
    import zarr
    from numcodecs import Blosc

    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    if mode == "plain":
        src = zarr.open_array(source, mode="r")
        dst = zarr.create_array(target, shape=src.shape, chunks=src.chunks, dtype=src.dtype, zarr_format=2,
                                compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE), overwrite=True)
        for i in range(src.shape[0]):
            dst[i] = (src[i].astype(np.float32) * 0.5 + 1.0).astype(np.uint16)
    else:
        from napari_mbdl.engine import Operation, run_blocks, run_steps

        op = Operation(key="bench/scale-offset", make=_cheap_op, out_dtype="uint16", bytes_per_voxel=16)
        run_steps(run_blocks(op, source, tile=CHUNK, out=target, max_batch=4, check_finite=False))
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mb": peak_kib / 1024}


def _measure(mode: str, source: Path, target: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(source), str(target)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _startup() -> dict:
    code = (
        "import time, sys; t=time.perf_counter(); import napari_mbdl; t1=time.perf_counter();"
        "from npe2 import PluginManager; pm=PluginManager.instance(); pm.discover();"
        "w=pm.get_manifest('napari-mbdl').contributions.widgets or []; t2=time.perf_counter();"
        "print(t1-t, t2-t1, len(w), 'torch' in sys.modules)"
    )
    import_s, widgets_s, n, torch_loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    torch_s = subprocess.run([sys.executable, "-c", "import time;t=time.perf_counter();import torch;print(time.perf_counter()-t)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return {"import_s": float(import_s), "widgets_s": float(widgets_s), "widgets": int(n),
            "torch_loaded": torch_loaded == "True", "torch_import_s": float(torch_s)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2,4", help="input sizes in GB")
    parser.add_argument("--workdir", default=".bench")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    rows = []
    for size in [float(s) for s in args.sizes.split(",")]:
        source = work / f"input_{size:g}GB.zarr"
        _make_input(source, size)
        plain = _measure("plain", source, work / "plain_out.zarr")
        engine = _measure("engine", source, work / "engine_out.zarr")
        shutil.rmtree(work / "plain_out.zarr", ignore_errors=True)
        shutil.rmtree(work / "engine_out.zarr", ignore_errors=True)
        rows.append((size, plain, engine, size * 1e9))
    print("Streaming engine vs plain zarr read+write (same data, same run; cheap per-chunk op)")
    print(f"{'size':>6} {'plain MB/s':>11} {'engine MB/s':>12} {'ratio':>6} {'plain RSS MB':>13} {'engine RSS MB':>14}")
    for size, plain, engine, nbytes in rows:
        ratio = plain["seconds"] / engine["seconds"]
        print(f"{size:>5g}G {nbytes / plain['seconds'] / 1e6:>11.0f} {nbytes / engine['seconds'] / 1e6:>12.0f} "
              f"{ratio:>6.2f} {plain['peak_rss_mb']:>13.0f} {engine['peak_rss_mb']:>14.0f}")
    if len(rows) >= 2:
        growth = rows[-1][2]["peak_rss_mb"] / rows[0][2]["peak_rss_mb"] - 1
        print(f"engine peak RSS growth {rows[0][0]:g} GB -> {rows[-1][0]:g} GB: {100 * growth:+.1f}% (goal within 10%)")
    print("goals: ratio >= 0.8, engine peak RSS < 1024 MB")
    s = _startup()
    print(f"import napari_mbdl: {s['import_s'] * 1000:.0f} ms; list {s['widgets']} widgets via npe2: "
          f"{s['widgets_s'] * 1000:.0f} ms; torch imported: {s['torch_loaded']} "
          f"(importing torch alone takes {s['torch_import_s'] * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
