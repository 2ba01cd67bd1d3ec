import numpy as np
import pytest
from scipy.ndimage import shift as shift_image

from napari_mbdl.engine import InputError
from napari_mbdl.xray_separation.registration import align_to_xray, check_registration, estimate_alignment
from napari_mbdl.xray_separation.synthetic import make_double_sided_panel


@pytest.fixture(scope="module")
def big_panel():
    return make_double_sided_panel(160)


def _shifted(rgb, offset):
    return np.stack([shift_image(rgb[..., c], offset, order=1, mode="nearest") for c in range(3)], axis=-1)


def test_registered_photographs_pass(big_panel):
    for rgb, what in ((big_panel.rgb1, "side 1"), (big_panel.rgb2, "side 2")):
        assert check_registration(rgb, big_panel.mixed, what).is_identity


def test_shift_is_found_and_undone(big_panel):
    moved = _shifted(big_panel.rgb1, (4, -6))
    assert estimate_alignment(moved, big_panel.mixed).shift == pytest.approx((-4, 6), abs=0.5)
    with pytest.raises(InputError, match="does not line up"):
        check_registration(moved, big_panel.mixed)
    aligned, alignment = align_to_xray(moved, big_panel.mixed)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(aligned[inner] - big_panel.rgb1[inner]).mean() < 0.01


def test_back_photographed_from_behind_is_mirrored(big_panel):
    from_behind = big_panel.rgb2[:, ::-1]
    aligned, alignment = align_to_xray(from_behind, big_panel.mixed)
    assert alignment.mirrored
    np.testing.assert_allclose(aligned, big_panel.rgb2, atol=1e-5)


def test_different_size_is_refused_then_resized(big_panel):
    from skimage.transform import resize

    larger = resize(big_panel.rgb1, (240, 240, 3), anti_aliasing=True).astype(np.float32)
    with pytest.raises(InputError, match="align it first"):
        check_registration(larger, big_panel.mixed)
    aligned, alignment = align_to_xray(larger, big_panel.mixed)
    assert aligned.shape == big_panel.rgb1.shape
    assert alignment.scale == pytest.approx((160 / 240, 160 / 240))
    assert np.abs(aligned - big_panel.rgb1).mean() < 0.02


def test_input_is_not_modified(big_panel):
    moved = _shifted(big_panel.rgb1, (3, 3))
    copy = moved.copy()
    align_to_xray(moved, big_panel.mixed)
    np.testing.assert_array_equal(moved, copy)
