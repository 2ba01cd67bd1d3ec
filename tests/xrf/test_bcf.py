"""Bruker .bcf reading (rosettasciio extra), on minimal .bcf files written by ``bcf_writer``."""

import sys

import numpy as np
import pytest

pytest.importorskip("rsciio")

from napari_mbdl.engine import InputError  # noqa: E402
from napari_mbdl.xrf import io as xrf_io  # noqa: E402
from napari_mbdl.xrf.io import read_bcf, read_cube  # noqa: E402
from napari_mbdl.xrf.napari_reader import get_reader  # noqa: E402

from .bcf_writer import write_bcf  # noqa: E402

OFFSET, GAIN = -0.05, 0.16  # keV


@pytest.fixture(scope="module")
def cube():
    """6 x 5 pixels x 256 channels: Poisson counts, two peaks, a hot pixel above 255 and an empty pixel."""
    rng = np.random.default_rng(7)
    channels = np.arange(256)
    spectrum = 0.3 + 6 * np.exp(-0.5 * ((channels - 40) / 2.0) ** 2) + 3 * np.exp(-0.5 * ((channels - 150) / 3.0) ** 2)
    weights = rng.uniform(0.5, 2.0, size=(6, 5, 1))
    counts = rng.poisson(weights * spectrum).astype(np.uint16)
    counts[2, 3, 40] = 300
    counts[4, 1] = 0
    return counts


@pytest.fixture
def small_bands(monkeypatch):
    """One decoded line per dask chunk, and a scan that reads and trims in small pieces, so every test
    crosses band, block and buffer boundaries."""
    monkeypatch.setattr(xrf_io, "_BCF_CHUNK_BYTES", 1)
    monkeypatch.setattr(xrf_io, "_BCF_SCAN_PIECE", 700)
    monkeypatch.setattr(xrf_io, "_BCF_SCAN_KEEP", 0)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
@pytest.mark.parametrize("packing", ["pulses", "12bit", "instructed"])
def test_bcf_round_trip(cube, tmp_path, small_bands, packing, compress):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, packing=packing, compress=compress, chunksize=2048,
                     block_size=1400)
    labeled = read_cube(path)
    assert labeled.axes == "yxc" and labeled.shape == (6, 5, 256) and labeled.name == "scan"
    assert labeled.dtype == np.uint16  # rosettasciio's own guess (uint8) would wrap the hot pixel
    assert labeled.data.chunks[0] == (1,) * 6  # lazy, one band of lines per chunk
    assert np.array_equal(np.asarray(labeled.data), cube)
    assert np.array_equal(np.asarray(labeled.data[1:4, 2:5, 30:50]), cube[1:4, 2:5, 30:50])
    energy = labeled.attrs["xrf_energy"]
    assert energy["offset_keV"] == pytest.approx(OFFSET) and energy["gain_keV"] == pytest.approx(GAIN)


def test_writer_makes_files_rosettasciio_decodes_itself(cube, tmp_path):
    """The test files are genuine: rosettasciio's own (whole-cube) decoder gives the same counts."""
    from rsciio.bruker import file_reader

    modest = np.minimum(cube, 200)  # below rosettasciio's uint8 guess for this cube
    path = write_bcf(tmp_path / "scan.bcf", modest, OFFSET, GAIN, packing="instructed", compress=True)
    (signal,) = file_reader(str(path), select_type="spectrum_image")
    assert np.array_equal(signal["data"], modest)
    assert len(file_reader(str(path))) == 2  # the spectrum image and the (skipped) counts image


def test_falls_back_to_rosettasciio_decoding_when_its_internals_move(cube, tmp_path, monkeypatch):
    def moved(*args, **kwargs):
        raise ImportError("cannot import name 'unbcf_fast'")

    monkeypatch.setattr(xrf_io, "_BcfHypermap", moved)
    modest = np.minimum(cube, 200)
    path = write_bcf(tmp_path / "scan.bcf", modest, OFFSET, GAIN, compress=True)
    labeled = read_cube(path)
    assert labeled.data.chunks == ((6,), (5,), (256,))  # rosettasciio's lazy array: one piece
    assert np.array_equal(np.asarray(labeled.data), modest)
    assert labeled.attrs["xrf_energy"]["gain_keV"] == pytest.approx(GAIN)


def test_bcf_metadata(cube, tmp_path):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, tube_kv=45.0, pixel_size_um=100.0)
    bruker = read_cube(path).attrs["bruker"]
    assert bruker["beam_kV"] == pytest.approx(45.0)
    assert bruker["detector"] == "XFlash 6|30" and bruker["elements"] == ["Fe", "Pb"]
    assert bruker["pixel_size_um"] == [100.0, 100.0] and bruker["index"] == 0
    assert bruker["date"] == "2022-06-20"


def test_opening_decodes_nothing_and_a_slice_only_its_lines(cube, tmp_path, small_bands, monkeypatch):
    from rsciio.bruker import unbcf_fast

    decoded = []
    parse = unbcf_fast.parse_to_numpy

    def counting(virtual_file, shape, dtype, downsample=1):
        decoded.append(shape[0])
        return parse(virtual_file, shape, dtype, downsample=downsample)

    monkeypatch.setattr(unbcf_fast, "parse_to_numpy", counting)
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, compress=True)
    labeled = read_cube(path)
    assert decoded == []
    assert np.array_equal(np.asarray(labeled.data[2:4, :, 40]), cube[2:4, :, 40])
    assert decoded == [1, 1]  # lines 2 and 3, nothing else


def test_downsample_and_cutoff(cube, tmp_path, small_bands):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, packing="instructed", compress=True)
    binned = read_bcf(path, downsample=2)
    padded = np.zeros((6, 6, 256), dtype=np.int64)
    padded[:, :5] = cube
    expected = padded.reshape(3, 2, 3, 2, 256).sum(axis=(1, 3))
    assert binned.shape == (3, 3, 256) and np.array_equal(np.asarray(binned.data), expected)
    assert binned.attrs["bruker"]["pixel_size_um"] == [500.0, 500.0]
    cropped = read_bcf(path, cutoff_at_kV=20.0)
    n = round((20.0 - OFFSET) / GAIN)
    assert cropped.shape == (6, 5, n) and np.array_equal(np.asarray(cropped.data), cube[:, :, :n])


def test_napari_reader_gives_an_energy_first_layer_with_calibration(cube, tmp_path):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, compress=True)
    reader = get_reader(str(path))
    assert reader is not None and get_reader(str(tmp_path / "scan.bcr")) is None
    ((data, meta, kind),) = reader(str(path))
    assert kind == "image" and data.shape == (256, 6, 5) and meta["axis_labels"] == ("energy", "y", "x")
    metadata = meta["metadata"]
    assert metadata["axes"] == "cyx"
    assert metadata["xrf_energy"]["gain_keV"] == pytest.approx(GAIN)
    assert metadata["xrf_energy"]["offset_keV"] == pytest.approx(OFFSET)
    assert metadata["tube_kv"] == pytest.approx(50.0) and metadata["bruker"]["detector"] == "XFlash 6|30"
    assert np.array_equal(np.asarray(data[:, 2, 3]), cube[2, 3])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
@pytest.mark.parametrize("kept", [0.5, 0.05, 0.9, 0.999])
def test_truncated_bcf_is_one_clear_error(cube, tmp_path, compress, kept):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN, compress=compress)
    data = path.read_bytes()
    cut = tmp_path / "cut.bcf"
    cut.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(InputError, match=r"^cut\.bcf is truncated") as info:
        read_cube(cut)
    assert "\n" not in str(info.value)


def test_not_a_bcf_and_a_corrupt_pixel_stream(cube, tmp_path, small_bands):
    junk = tmp_path / "junk.bcf"
    junk.write_bytes(b"not a Bruker file" * 100)
    with pytest.raises(InputError, match="junk.bcf is not a readable Bruker .bcf file"):
        read_cube(junk)
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN)
    data = bytearray(path.read_bytes())
    stream = data.index(np.array([6, 5], "<i4").tobytes() + bytes(16))
    first_pixel = stream + 0x1A0 + 4
    assert int.from_bytes(data[first_pixel:first_pixel + 4], "little") == 0
    data[first_pixel:first_pixel + 4] = (999).to_bytes(4, "little")  # x far outside the 5-pixel lines
    path.write_bytes(bytes(data))
    labeled = read_cube(path)  # the header is fine
    with pytest.raises(InputError, match="scan.bcf is corrupt: a pixel header of line 1 is invalid"):
        np.asarray(labeled.data[4])


def test_missing_rosettasciio_names_the_extra(cube, tmp_path, monkeypatch):
    path = write_bcf(tmp_path / "scan.bcf", cube, OFFSET, GAIN)
    monkeypatch.setitem(sys.modules, "rsciio", None)
    monkeypatch.setitem(sys.modules, "rsciio.bruker", None)
    with pytest.raises(InputError, match=r'pip install "napari-mbdl\[bcf\]"'):
        read_cube(path)


def test_cli_maps_a_bcf(scan, tmp_path):
    from napari_mbdl.cli import main
    from napari_mbdl.io.arrays import open_array

    path = write_bcf(tmp_path / "scan.bcf", scan.cube[:8, :8], scan.calibration.offset, scan.calibration.gain,
                     packing="instructed", compress=True)
    out = tmp_path / "maps.zarr"
    code = main(["xrf-maps", str(path), str(out), "--elements", "Fe,Cu,Pb", "--method", "linear", "-q"])
    assert code == 0
    maps = open_array(out)
    assert maps.shape == (6, 8, 8) and sorted(maps.attrs["xrf"]["elements"]) == ["Cu", "Fe", "Pb"]
