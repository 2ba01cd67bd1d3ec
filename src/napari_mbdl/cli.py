"""The ``mbdl`` command: one subcommand per capability, each a thin call of the public API.

Every subcommand reads and writes zarr/TIFF, shows a progress bar, accepts ``--device`` and
``--scheduler``, and exits with status 2 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Generator
from typing import Any

from napari_mbdl.errors import MBDLError, RunCancelled

# Modules that each define ``register(subparsers)``; one line per capability.
_SUBCOMMAND_MODULES = [
    "napari_mbdl.cli_core",
    # --- denoise cli ---
    "napari_mbdl.denoise.cli",
    # --- lfm cli ---
    "napari_mbdl.lfm.cli",
    # --- fusion cli ---
    "napari_mbdl.fusion.cli",
    # --- xrf cli ---
    "napari_mbdl.xrf.cli",
    # --- xray cli ---
    "napari_mbdl.xray_separation.cli",
]


def add_common_arguments(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """Options every compute subcommand shares."""
    parser.add_argument(
        "--device", default="auto", help="cuda, cuda:1, mps, cpu or auto (cuda > mps > cpu)"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="run on a dask.distributed cluster: 'local' for a LocalCluster, or a scheduler address",
    )
    parser.add_argument(
        "--memory-budget",
        default=None,
        help="device memory to plan tiles for, e.g. 2GB (default: from free memory)",
    )
    if output:
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing output (only once the new one is complete)"
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_steps_with_bar(steps: Generator, quiet: bool = False) -> Any:
    """Drive a steps generator to completion with a terminal progress bar per stage."""
    from tqdm import tqdm

    bar = None
    stage = None
    try:
        while True:
            try:
                event = next(steps)
            except StopIteration as stop:
                return stop.value
            if quiet:
                continue
            if event.stage != stage or bar is None:
                if bar is not None:
                    bar.close()
                stage = event.stage
                bar = tqdm(total=max(event.total, 1), desc=stage, file=sys.stderr, leave=True, dynamic_ncols=True,
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
            bar.total = max(event.total, 1)
            bar.n = event.done
            if event.message:
                bar.set_postfix_str(event.message, refresh=False)
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbdl", description="Model-based deep learning for scientific images (napari-mbdl)."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RunCancelled:
        print("mbdl: cancelled; run the same command again to resume.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mbdl: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except MBDLError as error:
        if args.debug:
            raise
        print(f"mbdl {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
