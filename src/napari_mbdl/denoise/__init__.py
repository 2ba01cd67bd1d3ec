"""Invertible-network denoisers (LINN, WINNet), noise estimation (NENet), Poisson-Gaussian
denoising and plug-and-play deblurring.  Public API: :mod:`napari_mbdl.denoise.api`,
:mod:`napari_mbdl.denoise.deblur`.  Importing this package does not import torch.
"""

import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """``napari_mbdl.denoise`` is both this subpackage and the public function (see ``api.denoise``):
    calling the module calls the function, so ``napari_mbdl.denoise(array, sigma=25)`` always works."""

    def __call__(self, *args, **kwargs):
        from napari_mbdl.denoise.api import denoise

        return denoise(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
