"""Post-processing of label maps (per card): keep the largest connected component of each label; the
bounding box of a mask (RA-UNet's liver box at inference and in training, one definition)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """For each non-zero label value keep only its largest 26-connected component."""
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = sitk.GetImageFromArray((labels == value).astype(np.uint8))
        components = sitk.RelabelComponent(sitk.ConnectedComponent(mask, True), sortByObjectSize=True)
        out[sitk.GetArrayViewFromImage(components) == 1] = value
    return out


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of a mask grown by ``margin`` voxels per side (clipped to the array), or None if empty.

    The same box MONAI's ``generate_spatial_bounding_box`` (``CropForeground``) gives; the cascade
    crops with it at inference and training crops its samples with it (``training.sampling.label_box``).
    """
    coords = np.nonzero(mask)
    if not coords[0].size:
        return None
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n)) for c, n in zip(coords, mask.shape))
