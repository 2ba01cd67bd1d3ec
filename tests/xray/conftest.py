import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """Training in tests shares a small machine: keep torch to one thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def panel():
    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel

    return make_double_sided_panel(64)
