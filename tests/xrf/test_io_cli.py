import numpy as np
import pytest

from napari_mbdl.xrf.io import read_cube, write_cube_zarr, write_hdf5, write_ripple
from napari_mbdl.xrf.napari_reader import get_reader


@pytest.mark.parametrize("kind", ["rpl", "h5", "zarr"])
def test_readers_round_trip_with_calibration(scan, tmp_path, kind):
    cube = scan.cube[:6, :5]
    if kind == "rpl":
        path = write_ripple(cube, tmp_path / "scan.rpl", scan.calibration)
    elif kind == "h5":
        path = write_hdf5(cube, tmp_path / "scan.h5", scan.calibration)
    else:
        path = tmp_path / "scan.zarr"
        write_cube_zarr(cube, path, scan.calibration)
    labeled = read_cube(path)
    assert labeled.axes == "yxc"
    assert np.array_equal(np.asarray(labeled.data[:]), cube)
    assert labeled.attrs["xrf_energy"]["gain_keV"] == pytest.approx(scan.calibration.gain)


def test_xrf_maps_h5_layout_energy_first(tmp_path, scan):
    import h5py

    with h5py.File(tmp_path / "maps.h5", "w") as handle:
        handle["MAPS/mca_arr"] = np.moveaxis(scan.cube[:4, :3], -1, 0)
        handle["MAPS/energy_calib"] = np.array([0.0, scan.calibration.gain, 0.0])
    labeled = read_cube(tmp_path / "maps.h5")
    assert labeled.axes == "cyx" and labeled.shape == (1024, 4, 3)
    assert labeled.attrs["xrf_energy"]["gain_keV"] == pytest.approx(scan.calibration.gain)


def test_napari_reader_gives_an_energy_first_layer(scan, tmp_path):
    path = write_ripple(scan.cube[:6, :5], tmp_path / "scan.rpl", scan.calibration)
    assert get_reader(str(tmp_path / "other.png")) is None
    reader = get_reader(str(path))
    ((data, meta, kind),) = reader(str(path))
    assert kind == "image" and data.shape == (1024, 6, 5)
    assert meta["metadata"]["axes"] == "cyx" and "xrf_energy" in meta["metadata"]
    assert np.array_equal(np.asarray(data[:, 2, 3]), scan.cube[2, 3])


def test_bad_ripple_header(tmp_path):
    from napari_mbdl.engine import InputError

    (tmp_path / "x.rpl").write_text("key\tvalue\nwidth\t4\n")
    (tmp_path / "x.raw").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="lacks"):
        read_cube(tmp_path / "x.rpl")


def test_cli_maps_a_cube_and_rejects_bad_input(scan, tmp_path, capsys):
    from napari_mbdl.cli import main
    from napari_mbdl.io.arrays import open_array

    cube_path = tmp_path / "cube.zarr"
    write_cube_zarr(scan.cube[:8, :8], cube_path, scan.calibration)
    out = tmp_path / "maps.zarr"
    code = main(["xrf-maps", str(cube_path), str(out), "--elements", "Fe,Cu,Pb", "--method", "linear", "-q"])
    assert code == 0
    maps = open_array(out)
    assert maps.shape == (6, 8, 8) and sorted(maps.attrs["xrf"]["elements"]) == ["Cu", "Fe", "Pb"]
    np.save(tmp_path / "plain.npy", scan.cube[:4, :4])
    code = main(["xrf-maps", str(tmp_path / "plain.npy"), str(tmp_path / "x.zarr"), "-q"])
    assert code == 2
    assert "no energy calibration" in capsys.readouterr().err
    code = main(["xrf-maps", str(tmp_path / "plain.npy"), str(tmp_path / "y.zarr"), "-q", "--energy", "0,0.039",
                 "--elements", "Xx"])
    assert code == 2
    assert not (tmp_path / "y.zarr").exists()


def test_cli_two_line_calibration(scan, tmp_path, capsys):
    from napari_mbdl.cli import main

    np.save(tmp_path / "plain.npy", scan.cube)
    fe, pb = (int(round(scan.calibration.channel(e))) + 2 for e in (6.404, 10.551))   # rough guesses are refined
    code = main(["xrf-maps", str(tmp_path / "plain.npy"), str(tmp_path / "maps.zarr"), "--calibrate",
                 f"{fe}:Fe,{pb}:Pb-La", "--elements", "Fe,Pb", "--method", "linear", "-q"])
    assert code == 0
    message = capsys.readouterr().err
    gain = float(message.split("gain ")[1].split(" eV")[0]) / 1000
    assert abs(gain / scan.calibration.gain - 1) < 0.01
    code = main(["xrf-maps", str(tmp_path / "plain.npy"), str(tmp_path / "x.zarr"), "--calibrate", "164:Fe", "-q"])
    assert code == 2
