"""Block operations for engine tests (module-level so the distributed mode can pickle them)."""

import functools

import numpy as np
from scipy import ndimage

CALLS = {"n": 0, "shapes": []}


def make_gaussian(device, sigma=2.0):
    """Smooths the last two axes of blocks shaped (B, t, y, x)."""

    def fn(block):
        CALLS["n"] += 1
        CALLS["shapes"].append(block.shape)
        sigmas = (0,) * (block.ndim - 3) + (sigma, sigma)
        return np.stack([ndimage.gaussian_filter(b.astype(np.float32), sigmas, truncate=4.0, mode="reflect") for b in block])

    return fn


def gaussian_reference(x, sigma=2.0):
    return np.stack([ndimage.gaussian_filter(b.astype(np.float32), sigma, truncate=4.0, mode="reflect") for b in x])


def make_gaussian_3d(device, sigma=1.5):
    """Smooths the last three axes of blocks shaped (B, t, z, y, x)."""

    def fn(block):
        sigmas = (0, sigma, sigma, sigma)
        return np.stack([ndimage.gaussian_filter(b.astype(np.float32), sigmas, truncate=4.0, mode="reflect") for b in block])

    return fn


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError; raised by the fake device below."""


def make_memory_limited(device, max_elements=40 * 40):
    """Doubles its input, but 'runs out of memory' on batches larger than max_elements."""

    def fn(block):
        if block.size > max_elements:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        CALLS["shapes"].append(block.shape)
        return block.astype(np.float32) * 2

    return fn


def make_spectrum_sum(device):
    def fn(block):  # (B, y, x, E) -> (B, y, x, 2): total counts and channel of the maximum
        return np.stack([block.sum(-1), block.argmax(-1)], axis=-1).astype(np.float32)

    return fn


def make_two_input(device):
    def fn(a, b):  # (B, y, x), (B, y, x, 3) -> (B, y, x)
        return (a + b.mean(-1)).astype(np.float32)

    return fn


gaussian = functools.partial(make_gaussian, sigma=2.0)
