"""Run the networks only where the image has data: the bounding box of its non-zero voxels.

Scanners and PACS often deliver a field of view larger than the anatomy, filled with zeros (padding to
a matrix size, an exported region, a reconstruction that leaves its borders empty). nnU-Net crops
every case to the bounding box of its non-zero voxels before preprocessing (Isensee et al. 2021,
doi:10.1038/s41592-020-01008-z, Methods, "Cropping"). A card opts in with ``inference.crop_to_nonzero``
(measured per model: docs/results.md). The crop is a region of the input's own voxel grid
(SimpleITK's ``RegionOfInterest`` keeps spacing and direction and moves the origin), so the
network sees the same voxels as on a tightly stored scan; the results are pasted back into the full
grid, voxel for voxel on the input's geometry, with background (label 0, map value 0) outside.
A zero-filled border is all this removes: a larger field of view with real tissue around the organ
is not cropped.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from .postprocessing import bounding_box

__all__ = ["MIN_CROP_VOXELS", "Region", "crop_region", "nonzero_region", "paste_region"]

#: A box thinner than this along an axis is not cropped to (a network needs some extent to work on).
MIN_CROP_VOXELS = 8


class Region(NamedTuple):
    """A box of a SimpleITK image's grid: first index and size, both in (x, y, z) order."""

    index: tuple[int, ...]
    size: tuple[int, ...]


def nonzero_region(image: sitk.Image) -> Region | None:
    """The bounding box of the voxels that are non-zero in any channel, or None when cropping to it would
    change nothing (no zero border), leave nothing (an all-zero image) or leave a sliver thinner than
    :data:`MIN_CROP_VOXELS` where the image is thicker."""
    values = sitk.GetArrayViewFromImage(image)
    mask = values != 0
    if image.GetNumberOfComponentsPerPixel() > 1:
        mask = mask.any(axis=-1)
    box = bounding_box(mask, 0)
    if box is None:
        return None
    full = mask.shape
    if all(s.start == 0 and s.stop == n for s, n in zip(box, full)):
        return None
    if any(s.stop - s.start < min(MIN_CROP_VOXELS, n) for s, n in zip(box, full)):
        return None
    return Region(tuple(int(s.start) for s in reversed(box)), tuple(int(s.stop - s.start) for s in reversed(box)))


def crop_region(image: sitk.Image, region: Region) -> sitk.Image:
    """The region of ``image`` as an image of its own, at the same place in physical space."""
    return sitk.RegionOfInterest(image, list(region.size), list(region.index))


def paste_region(part: sitk.Image, reference: sitk.Image, region: Region, fill: float = 0) -> sitk.Image:
    """``part`` (a result on the cropped grid) placed into an image on ``reference``'s grid, ``fill``
    elsewhere; the pixel type is ``part``'s."""
    values = sitk.GetArrayViewFromImage(part)
    full = np.full(tuple(reversed(reference.GetSize())) + values.shape[3:], fill, dtype=values.dtype)
    (x, y, z), (sx, sy, sz) = region.index, region.size
    full[z:z + sz, y:y + sy, x:x + sx] = values
    out = sitk.GetImageFromArray(full, isVector=part.GetNumberOfComponentsPerPixel() > 1)
    out.CopyInformation(reference)
    return out
