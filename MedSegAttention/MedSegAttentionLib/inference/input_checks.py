"""Checks on an input volume before anything runs: each failure says exactly what is wrong."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 50.0


def validate_volume(image: sitk.Image, in_channels: int = 1, modality: str | None = None) -> list[str]:
    """Raise :class:`InputError` for unusable input; return warnings for doubtful input."""
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 2:
        raise InputError(f"input is a 2-D image of size {size}; this model needs a 3-D volume")
    if dim == 4:
        raise InputError(
            f"input is 4-D (size {size}): a time series or multi-volume file; extract one 3-D volume first"
        )
    if dim != 3:
        raise InputError(f"input has {dim} dimensions; this model needs a 3-D volume")
    if min(size) < 2:
        raise InputError(f"input volume of size {size} is empty or a single slice along one axis")
    channels = image.GetNumberOfComponentsPerPixel()
    if channels != in_channels:
        raise InputError(f"input has {channels} channel(s) per voxel; this model needs {in_channels}")
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputError(
            f"absurd voxel spacing {tuple(round(s, 6) for s in spacing)} mm (expected {MIN_SPACING_MM}-"
            f"{MAX_SPACING_MM} mm per axis); fix the image header"
        )
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.isfinite(direction).all() or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError("the image direction matrix is not a rotation; fix the image header")

    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"input contains {int(array.size - finite.sum())} NaN or infinite voxel value(s)")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InputError(f"input volume is constant (every voxel is {low:g}); nothing to segment")
    return _label_map_warnings(array) + _modality_warnings(low, high, modality)


#: an image with at most this many distinct (integer) values is most likely a label map
MAX_LABEL_VALUES = 16


def _label_map_warnings(array: np.ndarray) -> list[str]:
    """A label map given as the image segments into nonsense: warn when the values look like labels."""
    sample = array.ravel()[:: max(1, array.size // 200_000)]
    values = np.unique(sample)
    if values.size > MAX_LABEL_VALUES or not np.all(values == np.round(values)):
        return []
    values = np.unique(array)  # confirm on every voxel (only reached for label-like samples)
    if values.size > MAX_LABEL_VALUES or not np.all(values == np.round(values)):
        return []
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if values.size > 8 else "")
    return [f"the input has only {values.size} distinct integer values ({shown}): it looks like a label map or mask, "
            "not an image; check that you chose the image volume"]


def _modality_warnings(low: float, high: float, modality: str | None) -> list[str]:
    if modality == "CT" and low > -200:
        return [
            f"the model expects CT in Hounsfield units, but the lowest value is {low:g} (air is about -1000 HU); "
            "check the modality or rescale slope/intercept"
        ]
    if modality == "MR" and low < -500:
        return [f"the model expects MR, but values go down to {low:g}, which looks like CT in Hounsfield units"]
    return []


def empty_result_warnings(label: sitk.Image, labels: list[dict], modality: str | None) -> list[str]:
    """An empty segmentation may be right (the structure is outside the field of view) but is never
    returned without a word: say so, and what to check."""
    if sitk.GetArrayViewFromImage(label).any():
        return []
    names = ", ".join(str(entry.get("name", entry.get("value"))) for entry in labels) or "its structures"
    return [f"the segmentation is empty: the model found no {names} in this image; check that the image shows "
            f"it and is the {modality or 'kind of'} scan the model expects"]
