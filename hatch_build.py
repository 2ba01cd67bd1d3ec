"""Ship the top-level ``napari.yaml`` inside the package, with one source of truth.

Editable installs get a symbolic link (edits to the top-level manifest are live);
wheels get the file itself.  ``src/napari_mbdl/napari.yaml`` is git-ignored.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ManifestHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        source = root / "napari.yaml"
        target = root / "src" / "napari_mbdl" / "napari.yaml"
        if target.is_symlink() or target.exists():
            target.unlink()
        if version == "editable":
            try:
                os.symlink(os.path.relpath(source, target.parent), target)
                return
            except OSError:  # e.g. Windows without symlink rights
                pass
        shutil.copyfile(source, target)
        if version != "editable":
            build_data["force_include"][str(source)] = "napari_mbdl/napari.yaml"
