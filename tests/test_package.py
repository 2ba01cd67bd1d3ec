import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_import_and_widget_discovery_do_not_import_torch():
    out = _python(
        "import sys, napari_mbdl\n"
        "from npe2 import PluginManager\n"
        "pm = PluginManager.instance(); pm.discover()\n"
        "m = pm.get_manifest('napari-mbdl')\n"
        "print(len(m.contributions.widgets or []), 'torch' in sys.modules)"
    )
    n_widgets, torch_loaded = out.split()
    assert int(n_widgets) >= 1 and torch_loaded == "False"


def test_public_api_names_resolve():
    import napari_mbdl

    for name in napari_mbdl.__all__:
        assert getattr(napari_mbdl, name) is not None


def test_manifest_is_shipped_and_valid():
    from importlib.resources import files

    packaged = files("napari_mbdl") / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-mbdl"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_command_imports():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-mbdl")
    for command in manifest.contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        imported = __import__(module, fromlist=[attribute])
        assert hasattr(imported, attribute), command.python_name


@pytest.mark.slow
def test_wheel_contains_manifest(tmp_path):
    pytest.importorskip("build")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    import zipfile

    (wheel,) = tmp_path.glob("*.whl")
    archive = zipfile.ZipFile(wheel)
    assert "napari_mbdl/napari.yaml" in archive.namelist()
    assert archive.read("napari_mbdl/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
