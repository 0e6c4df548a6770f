"""Validation cases delivered the way scanners and PACS deliver them: the same anatomy on other grids.

* ``original``: the case as stored.
* ``padded``: a larger, zero-filled field of view (48, 48, 32 voxels of zeros on each side in x, y, z).
* ``oblique``: resampled on a grid rotated 30 degrees about two axes (x, then y) with anisotropic
  0.7 x 0.9 x 2.5 mm voxels (thick slices), covering the whole original extent; outside it, zeros.
* ``sagittal``, ``coronal``: the same voxels stored in another axis order (the slice axis runs
  left-right, or front-back, flipped), as a scanner that acquired that way delivers them; ``ras``: the
  first two axes flipped (RAS-first storage, common in NIfTI converters). No resampling.
* ``spikes``: 200 voxels at 50 times the image's maximum (seeded positions): hot pixels or a spike
  artefact, which no clinician would notice but which pulls a plain mean and standard deviation.

Images are resampled linearly and labels by nearest neighbour (SimpleITK, identity transform in
physical space), so each variant's label is the truth on that variant's grid.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["VARIANTS", "STORAGE_ORDERS", "make_variant", "oblique_variant", "padded_variant", "spikes_variant",
           "stored_variant"]


def padded_variant(image: sitk.Image, label: sitk.Image, pad_xyz: Sequence[int] = (48, 48, 32)) -> tuple[sitk.Image, sitk.Image]:
    """Zero padding of ``pad_xyz`` voxels on both sides of each axis (origin moves, geometry kept)."""
    pad = [int(p) for p in pad_xyz]
    return sitk.ConstantPad(image, pad, pad, 0), sitk.ConstantPad(label, pad, pad, 0)


def _rotation(degrees: float, axes: str) -> np.ndarray:
    matrix = np.eye(3)
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    single = {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
              "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
              "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}
    for axis in axes:
        matrix = single[axis] @ matrix
    return matrix


def oblique_variant(image: sitk.Image, label: sitk.Image, degrees: float = 30.0, axes: str = "xy",
                    spacing: Sequence[float] = (0.7, 0.9, 2.5)) -> tuple[sitk.Image, sitk.Image]:
    """Resample onto a grid rotated ``degrees`` about each of ``axes`` with ``spacing`` (mm), covering the input."""
    direction = _rotation(degrees, axes) @ np.asarray(image.GetDirection()).reshape(3, 3)
    size = np.asarray(image.GetSize())
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)], float)
    physical = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    local = physical @ direction  # coordinates along the new axes (columns of the direction matrix)
    low, high = local.min(0), local.max(0)
    spacing = np.asarray(spacing, float)
    new_size = [int(n) for n in np.ceil((high - low) / spacing) + 1]
    origin = direction @ low

    def resample(volume: sitk.Image, interpolator: int) -> sitk.Image:
        return sitk.Resample(volume, new_size, sitk.Transform(), interpolator, origin.tolist(), spacing.tolist(),
                             direction.ravel().tolist(), 0, volume.GetPixelID())

    return resample(image, sitk.sitkLinear), resample(label, sitk.sitkNearestNeighbor)


#: permutation of the voxel axes, then flips: the same physical image stored in another order
STORAGE_ORDERS = {"sagittal": ((1, 2, 0), (False, False, False)), "coronal": ((0, 2, 1), (False, False, True)),
                  "ras": ((0, 1, 2), (True, True, False))}


def stored_variant(image: sitk.Image, label: sitk.Image, storage: str) -> tuple[sitk.Image, sitk.Image]:
    """The same physical image and label with the voxel axes permuted and flipped (geometry adjusted)."""
    order, flips = STORAGE_ORDERS[storage]

    def store(volume: sitk.Image) -> sitk.Image:
        permuted = sitk.PermuteAxes(volume, order)
        return sitk.Flip(permuted, flips) if any(flips) else permuted

    return store(image), store(label)


def spikes_variant(image: sitk.Image, label: sitk.Image, count: int = 200, factor: float = 50.0,
                   seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """``count`` voxels set to ``factor`` x the maximum (positions seeded); the label is unchanged."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    rng = np.random.default_rng(seed)
    array[tuple(rng.integers(0, n, count) for n in array.shape)] = float(array.max()) * factor
    spiked = sitk.GetImageFromArray(array)
    spiked.CopyInformation(image)
    return spiked, label


VARIANTS: dict[str, Callable[[sitk.Image, sitk.Image], tuple[sitk.Image, sitk.Image]]] = {
    "original": lambda image, label: (image, label),
    "padded": padded_variant,
    "oblique": oblique_variant,
    **{name: (lambda image, label, name=name: stored_variant(image, label, name)) for name in STORAGE_ORDERS},
    "spikes": spikes_variant,
}


def make_variant(name: str, image: sitk.Image, label: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    try:
        return VARIANTS[name](image, label)
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; one of {sorted(VARIANTS)}") from None
