import numpy as np
import pytest

from napari_mbdl.engine import InputError
from napari_mbdl.lfm.optics import LFOptics, LFPsf, debye_radial_field, load_or_compute_psf, parse_depths, psf_steps


def test_default_optics_are_consistent():
    o = LFOptics()
    assert o.n_depths == 9
    assert o.voxel_size_um == pytest.approx((7.5, 1.5, 1.5))
    assert LFOptics.from_dict(o.to_dict()) == o
    assert len(o.key()) == 12 and o.key() == LFOptics().key()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"na": 1.4}, "smaller than the immersion index"),
        ({"pixels_per_lenslet": 14, "pixel_size_um": 150 / 14}, "odd"),
        ({"pixel_size_um": 9.0}, "rectify"),
        ({"depths_um": (5.0, 0.0)}, "increasing"),
        ({"magnification": -1.0}, "positive"),
        ({"voxels_per_lenslet": 17}, "cannot exceed"),
    ],
)
def test_bad_optics_are_refused(change, words):
    with pytest.raises(InputError, match=words):
        LFOptics(**change)


def test_optics_from_yaml_with_depth_range(tmp_path):
    path = tmp_path / "optics.yaml"
    path.write_text("optics:\n  magnification: 20\n  depths_um: {start: -10, stop: 10, step: 5}\n")
    o = LFOptics.from_yaml(path)
    assert o.depths_um == (-10.0, -5.0, 0.0, 5.0, 10.0)
    path.write_text("magnificaton: 20\n")
    with pytest.raises(InputError, match="unknown parameter"):
        LFOptics.from_yaml(path)
    with pytest.raises(InputError, match="not found"):
        LFOptics.from_yaml(tmp_path / "missing.yaml")
    assert parse_depths("-1:1:1") == (-1.0, 0.0, 1.0)
    assert parse_depths("1, 2,3") == (1.0, 2.0, 3.0)
    with pytest.raises(InputError):
        parse_depths("a:b")


def test_debye_field_in_focus_is_an_airy_pattern():
    o = LFOptics()
    rho = np.linspace(0, 3, 301)
    intensity = np.abs(debye_radial_field(rho, 0.0, o)) ** 2
    # first dark ring near 0.61 lambda / NA (the sqrt(cos) apodisation moves it a little)
    first_min = rho[np.argmax(np.diff(intensity) > 0)]
    assert first_min == pytest.approx(0.61 * o.wavelength_um / o.na, rel=0.08)
    # defocus spreads the light: lower peak, same total power
    r2 = np.linspace(0, 40, 4001)
    in_focus = np.abs(debye_radial_field(r2, 0.0, o)) ** 2
    defocus = np.abs(debye_radial_field(r2, 20.0, o)) ** 2
    assert defocus[0] < 0.1 * in_focus[0]
    power = lambda f: np.trapezoid(f * r2, r2)  # noqa: E731
    assert power(defocus) == pytest.approx(power(in_focus), rel=0.05)


def test_psf_physics(small_psf, small_optics):
    psf = small_psf.psf
    N, P = small_optics.pixels_per_lenslet, small_optics.psf_lenslets
    assert psf.shape == (3, 3, 3, P * N, P * N)
    assert np.all(np.isfinite(psf)) and psf.min() >= 0
    assert psf.sum(axis=(3, 4)).mean() == pytest.approx(1.0, rel=1e-5)
    centre = slice((P // 2) * N, (P // 2 + 1) * N)
    in_focus = psf[1, 1, 1]  # native object plane, centre voxel: all light behind its own lenslet
    assert in_focus[centre, centre].sum() / in_focus.sum() > 0.9
    for z in (0, 2):  # out of focus: light spreads over neighbouring lenslets
        spread = psf[z, 1, 1]
        assert spread[centre, centre].sum() / spread.sum() < 0.6
    # mirror symmetry of the centre voxel's pattern
    assert np.allclose(in_focus, in_focus[::-1, ::-1], atol=1e-3 * in_focus.max())
    # the off-centre voxels are mirror images of each other
    assert np.allclose(psf[0, 0, 1], psf[0, 2, 1][::-1, :], atol=2e-3 * psf[0].max())


def test_psf_save_load_and_cache(small_psf, small_optics, tmp_path):
    path = small_psf.save(tmp_path / "psf.zarr")
    loaded = LFPsf.load(path)
    assert loaded.optics == small_optics
    np.testing.assert_array_equal(loaded.psf, small_psf.psf)
    from napari_mbdl.engine import OutputExistsError

    with pytest.raises(OutputExistsError):
        small_psf.save(path)
    small_psf.save(path, overwrite=True)  # replacing our own PSF is fine
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing to replace"):
        small_psf.save(tmp_path / "folder.zarr", overwrite=True)
    assert (tmp_path / "folder.zarr" / "precious.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="not found"):
        LFPsf.load(tmp_path / "nope.zarr")
    with pytest.raises(InputError, match="shape"):
        LFPsf(psf=small_psf.psf[:2], optics=small_optics).check()
    cached = load_or_compute_psf(small_optics, tmp_path / "cache")
    assert (tmp_path / "cache" / f"lfm-psf-{small_optics.key()}.zarr").exists()
    np.testing.assert_allclose(cached.psf, small_psf.psf)


def test_psf_steps_report_every_depth(small_optics):
    events = []
    gen = psf_steps(small_optics)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert [e.done for e in events] == [1, 2, 3]
    assert result.psf.shape[0] == 3


def test_optics_from_olaf_camera_yaml(tmp_path):
    from napari_mbdl.lfm.optics import optics_from_olaf_config

    path = tmp_path / "20x.yaml"
    path.write_text("gridType: reg\nfocus: single\nplenoptic: 1\nuLensMask: 1\nM: 20\nNA: 0.5\nftl: 200000\n"
                    "fm: 3000\nlensPitch: 150\npixelPitch: 6.5\nn: 1.33\nWaveLength: 525*1e-3\n"
                    "tube2mla: 0\nmla2sensor: 0\n")
    o = optics_from_olaf_config(path, depths_um="-30:30:7.5")
    assert (o.magnification, o.na, o.n, o.mla_focal_um) == (20.0, 0.5, 1.33, 3000.0)
    assert o.wavelength_um == pytest.approx(0.525)
    assert o.pixels_per_lenslet == 23 and o.pixel_size_um == pytest.approx(150 / 23)  # 150 / 6.5 = 23.08
    assert o.n_depths == 9
    path.write_text("gridType: hex\nM: 20\nNA: 0.5\nfm: 3000\nlensPitch: 150\npixelPitch: 6.5\nWaveLength: 0.52\n")
    with pytest.raises(InputError, match="hexagonal"):
        optics_from_olaf_config(path, depths_um=(0.0,))
    path.write_text("M: 20\nNA: 0.5\n")
    with pytest.raises(InputError, match="missing"):
        optics_from_olaf_config(path, depths_um=(0.0,))
