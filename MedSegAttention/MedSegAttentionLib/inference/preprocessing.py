"""Preprocessing shared by inference and training: one definition, read from the model card.

Geometry: the model grid keeps the input's origin and direction (after the optional exact permutation
and flip of its axes to the training orientation) and only changes the spacing, so mapping outputs
back with :func:`resample_to_reference` aligns them with the input voxel for voxel, also for oblique
directions. Axis order: spacings are (x, y, z) in millimetres as ITK and Slicer show
them; arrays are (z, y, x) as SimpleITK/NumPy/PyTorch store them.

Intensity methods (``card["preprocessing"]["intensity"]``):
* ``{"method": "ct_window", "window": [lo, hi]}``: clip Hounsfield units to the window, scale to [0, 1].
* ``{"method": "zscore", "nonzero": true}``: subtract mean and divide by standard deviation (computed
  over non-zero voxels when ``nonzero``), the usual MR normalisation.
* ``{"method": "percentile_zscore", "percentiles": [0.5, 99.5]}``: clip to percentiles, then z-score
  (statistics over non-zero voxels when ``nonzero``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


@dataclass(frozen=True)
class PreprocessingSpec:
    """Target spacing (x, y, z mm; ``None`` per axis keeps the input's), intensity normalisation and the
    voxel-axis orientation of the training data (a DICOM code such as ``"LPS"``; ``None`` keeps the input's)."""

    target_spacing: tuple[float | None, float | None, float | None] | None = None
    intensity: Mapping[str, Any] = field(default_factory=lambda: {"method": "zscore", "nonzero": False})
    orientation: str | None = None

    @classmethod
    def from_card(cls, preprocessing: Mapping[str, Any]) -> "PreprocessingSpec":
        spacing = preprocessing.get("target_spacing")
        return cls(
            target_spacing=tuple(spacing) if spacing is not None else None,  # type: ignore[arg-type]
            intensity=dict(preprocessing.get("intensity", {"method": "zscore", "nonzero": False})),
            orientation=preprocessing.get("orientation"),
        )

    def spacing_for(self, image: sitk.Image) -> tuple[float, float, float]:
        if self.target_spacing is None:
            return tuple(image.GetSpacing())  # type: ignore[return-value]
        return tuple(t if t is not None else s for t, s in zip(self.target_spacing, image.GetSpacing()))  # type: ignore[return-value]


def model_grid(image: sitk.Image, spacing: Sequence[float]) -> sitk.Image:
    """An empty image with the input's origin and direction, the given spacing, covering its extent."""
    size = [
        max(1, int(round(n * s_in / s_out))) for n, s_in, s_out in zip(image.GetSize(), image.GetSpacing(), spacing)
    ]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    grid.SetSpacing([float(s) for s in spacing])
    return grid


def resample_like(image: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (identity transform in physical space)."""
    if same_grid(image, reference):
        return image
    return sitk.Resample(
        image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID(), useNearestNeighborExtrapolator=True
    )


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, spacing, origin and direction (a resampling between them is the identity)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-9)
    )


def intensity_transform(array: np.ndarray, intensity: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The card's intensity normalisation with its statistics taken from ``array``, as a function.

    ``normalise_intensity(a, spec) == intensity_transform(a, spec)(a)``; applying the function to
    ``np.zeros(1)`` gives the normalised value of a zero voxel, which training uses to fill a larger
    field of view exactly as a scanner's zero padding arrives at inference.
    """
    method = intensity.get("method")
    data = array.astype(np.float32, copy=False)
    if method == "ct_window":
        lo, hi = (float(v) for v in intensity["window"])
        return lambda a: ((np.clip(a.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if method == "percentile_zscore":
        values = data[data != 0] if intensity.get("nonzero") and (data != 0).any() else data
        lo, hi = (float(v) for v in np.percentile(values, intensity.get("percentiles", [0.5, 99.5])))
        clipped = np.clip(values, lo, hi)
        mean, std = float(clipped.mean()), max(float(clipped.std()), 1e-8)
        return lambda a: ((np.clip(a.astype(np.float32), lo, hi) - mean) / std).astype(np.float32)
    if method == "zscore":
        values = data[data != 0] if intensity.get("nonzero") and (data != 0).any() else data
        mean, std = float(values.mean()), max(float(values.std()), 1e-8)
        return lambda a: ((a.astype(np.float32) - mean) / std).astype(np.float32)
    raise InputError(f"unknown intensity normalisation {method!r} in the model card")


def normalise_intensity(array: np.ndarray, intensity: Mapping[str, Any]) -> np.ndarray:
    """Apply the card's intensity normalisation to a float array; returns float32.

    ``zscore`` with ``nonzero: true`` takes mean and standard deviation over the non-zero voxels
    only, so zero padding around the scan (a larger field of view, the corners of an oblique
    resampling) does not change the normalised tissue values (nnU-Net's "use mask for norm").
    """
    return intensity_transform(array, intensity)(array)


def resample_to_model_grid(image: sitk.Image, spec: PreprocessingSpec) -> tuple[np.ndarray, sitk.Image]:
    """The (C, z, y, x) float32 intensities on the model grid (not normalised) and that grid.

    With ``spec.orientation`` the voxel axes are first permuted and flipped to the training data's
    orientation (exact, no interpolation): a scan stored sagittally, coronally or RAS-first shows the
    network the anatomy in the order it was trained on (``Testing/engine/test_orientation.py``).
    """
    float_image = sitk.Cast(image, sitk.sitkVectorFloat32 if image.GetNumberOfComponentsPerPixel() > 1 else sitk.sitkFloat32)
    if spec.orientation:
        float_image = sitk.DICOMOrient(float_image, spec.orientation)
    grid = model_grid(float_image, spec.spacing_for(float_image))
    resampled = resample_like(float_image, grid, sitk.sitkLinear)
    array = sitk.GetArrayFromImage(resampled)
    return (array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)), grid


def preprocess_with_background(image: sitk.Image, spec: PreprocessingSpec) -> tuple[np.ndarray, sitk.Image, tuple[float, ...]]:
    """:func:`preprocess` plus the normalised value of a zero voxel per channel (what training fills a
    larger, zero-padded field of view with)."""
    array, grid = resample_to_model_grid(image, spec)
    transforms = [intensity_transform(channel, spec.intensity) for channel in array]
    normalised = np.stack([f(channel) for f, channel in zip(transforms, array)])
    background = tuple(float(f(np.zeros(1, np.float32))[0]) for f in transforms)
    return normalised, grid, background


def preprocess(image: sitk.Image, spec: PreprocessingSpec) -> tuple[np.ndarray, sitk.Image]:
    """Resample to the model spacing and normalise.

    Returns the (C, z, y, x) float32 array on the model grid and that grid (an image whose geometry
    the outputs are defined on).
    """
    array, grid, _ = preprocess_with_background(image, spec)
    return array, grid


def array_to_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) or (C, z, y, x) array in an image with ``grid``'s geometry."""
    vector = array.ndim == 4
    image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1) if vector else array, isVector=vector)
    image.CopyInformation(grid)
    return image


def resample_to_reference(
    array: np.ndarray, grid: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear
) -> np.ndarray:
    """Bring a (z, y, x) or (C, z, y, x) array from the model grid onto the input grid."""
    reference_grid = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    reference_grid.CopyInformation(reference)
    out = sitk.GetArrayFromImage(resample_like(array_to_image(array, grid), reference_grid, interpolator))
    return np.moveaxis(out, -1, 0) if array.ndim == 4 else out
