"""Invertible-network denoisers (LINN, WINNet), noise estimation (NENet), Poisson-Gaussian
denoising and plug-and-play deblurring.  Public API: :mod:`napari_mbdl.denoise.api`,
:mod:`napari_mbdl.denoise.deblur`.  Importing this package does not import torch.
"""
