"""Post-processing of label maps (per card): keep the largest connected component of each label."""

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
