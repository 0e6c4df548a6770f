"""Training augmentation: the ways scans arrive, as MONAI transforms on (image, label) dictionaries.

A recipe's ``augment`` block selects them (all off by default; values are probabilities per sample):

* ``flip``: mirror along each axis (``flip_axes``: which array axes; default all).
* ``rotate``: in-plane rotation up to ``degrees`` (the 2D papers' augmentation).
* ``affine``: 3D rotation up to ``degrees`` about *every* axis and isotropic scaling in
  ``[1 - scale, 1 + scale]`` (MONAI ``RandAffined``). With ``affine`` the sampler crops a window
  ``crop_margin`` times larger and the affine resamples its centre to the patch, so rotated corners
  hold real tissue where the scan has it and zeros where it does not: the oblique acquisitions and
  reformatted series a PACS delivers.
* ``fov_pad``: pad the whole volume with zero voxels, a random amount up to ``voxels`` (x, y, z) on
  each side, before the window is drawn: a larger, zero-filled field of view around the organ.
* ``low_resolution``: anisotropic resolution: one random axis is downsampled by a factor up to
  ``max_factor`` and interpolated back (thick slices, e.g. 2.5 mm resampled to the model grid).
  MONAI's ``RandSimulateLowResolution`` zooms every axis by the same factor, so this one axis
  version is written here.
* ``scale``: isotropic zoom (2D recipes); ``intensity``: scale and shift; ``gamma``: contrast
  (``RandAdjustContrastd``); ``bias_field``: smooth multiplicative field (MR coil shading,
  ``RandBiasFieldd``); ``noise``: Gaussian noise of standard deviation up to ``std``.

Zero filling: the sampler subtracts the volume's ``background`` (the normalised value of a zero
voxel) before the spatial transforms and adds it back after, so every filled voxel reads exactly as
a zero voxel of the scan would after the card's normalisation.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    BorderPad,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
)

__all__ = ["RandAnisotropicResolutiond", "RandFieldOfViewPadd", "affine_crop_size", "augmentations", "fov_pad"]

KEYS = ("image", "label")


class RandFieldOfViewPadd(RandomizableTransform, MapTransform):
    """Pad image and label with zeros by a random amount up to ``voxels`` (per spatial axis) each side."""

    def __init__(self, keys: Sequence[Hashable], voxels: Sequence[int], prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.voxels = [int(v) for v in voxels]
        self.border: list[int] = []

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.border = [int(self.R.randint(0, v + 1)) for v in self.voxels for _ in range(2)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        out = dict(data)
        if not self._do_transform or not any(self.border):
            return out
        pad = BorderPad(spatial_border=self.border, mode="constant")
        for key in self.key_iterator(out):
            out[key] = pad(out[key])
        return out


class RandAnisotropicResolutiond(RandomizableTransform, MapTransform):
    """Downsample the image along one random spatial axis by up to ``max_factor`` and interpolate back.

    The label keeps full resolution: the network learns the true shape from thick-slice input.
    """

    def __init__(self, keys: Sequence[Hashable], max_factor: float, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.max_factor = float(max_factor)
        self.axis, self.factor = 0, 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.axis = int(self.R.randint(0, 3))
        self.factor = float(self.R.uniform(1.0, self.max_factor))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        out = dict(data)
        if not self._do_transform or self.factor <= 1.0:
            return out
        for key in self.key_iterator(out):
            img = torch.as_tensor(out[key]).float()
            size = list(img.shape[1:])
            low = list(size)
            low[self.axis] = max(1, int(round(size[self.axis] / self.factor)))
            down = F.interpolate(img[None], size=low, mode="area")
            out[key] = F.interpolate(down, size=size, mode="trilinear", align_corners=False)[0]
        return out


def affine_crop_size(patch: Sequence[int], augment: Mapping[str, Any]) -> tuple[int, ...]:
    """The window drawn before a 3D ``affine`` augmentation: ``crop_margin`` x the patch (default 1.5)."""
    affine = augment.get("affine") or {}
    if float(affine.get("prob", 0)) <= 0:
        return tuple(int(p) for p in patch)
    margin = float(affine.get("crop_margin", 1.5))
    return tuple(int(math.ceil(p * margin)) for p in patch)


def fov_pad(augment: Mapping[str, Any], dims: int) -> list[Any]:
    """The field-of-view padding (before cropping), or nothing; ``voxels`` is (x, y, z) like patch sizes."""
    pad = augment.get("fov_pad") or {}
    if float(pad.get("prob", 0)) <= 0:
        return []
    voxels = list(reversed([int(v) for v in pad["voxels"]]))[-dims:]  # (x, y, z) -> (z, y, x)
    return [RandFieldOfViewPadd(KEYS, voxels, float(pad["prob"]))]


def augmentations(aug: Mapping[str, Any], dims: int, patch: Sequence[int]) -> tuple[list[Any], list[Any]]:
    """(zero-shifted, intensity) transforms for a window; ``patch`` is the (z, y, x) or (y, x) output size.

    The first list (spatial transforms and the multiplicative bias field) runs on the zero-shifted
    image (see the module docstring), the second after the background is added back.
    """
    spatial: list[Any] = []
    affine = aug.get("affine") or {}
    if float(affine.get("prob", 0)) > 0:
        if dims != 3:
            raise ValueError("augment.affine is for 3D patches; 2D recipes use rotate and scale")
        angle = float(np.deg2rad(float(affine.get("degrees", 0))))
        s = float(affine.get("scale", 0))
        spatial.append(RandAffined(KEYS, spatial_size=tuple(int(p) for p in patch), prob=float(affine["prob"]),
                                   rotate_range=(angle, angle, angle), scale_range=(s, s, s),
                                   mode=("bilinear", "nearest"), padding_mode="zeros"))
    flip = float(aug.get("flip") or 0.0)
    if flip > 0:
        axes = aug.get("flip_axes")
        axes = list(range(dims)) if axes is None else [a for a in axes if a < dims]
        spatial += [RandFlipd(KEYS, prob=flip, spatial_axis=a) for a in axes]
    rotate = aug.get("rotate") or {}
    if float(rotate.get("prob", 0)) > 0 and float(rotate.get("degrees", 0)) > 0:
        angle = float(np.deg2rad(rotate["degrees"]))
        spatial.append(RandRotated(KEYS, range_x=angle, prob=float(rotate["prob"]), mode=("bilinear", "nearest"),
                                   padding_mode="border"))
    scale = aug.get("scale") or {}
    if float(scale.get("prob", 0)) > 0 and float(scale.get("range", 0)) > 0:
        r = float(scale["range"])
        mode = ("trilinear", "nearest") if dims == 3 else ("bilinear", "nearest")
        spatial.append(RandZoomd(KEYS, prob=float(scale["prob"]), min_zoom=1 - r, max_zoom=1 + r, mode=mode,
                                 padding_mode="edge", keep_size=True))
    low = aug.get("low_resolution") or {}
    if float(low.get("prob", 0)) > 0 and dims == 3:
        spatial.append(RandAnisotropicResolutiond(["image"], float(low.get("max_factor", 2.0)), float(low["prob"])))

    bias = aug.get("bias_field") or {}
    if float(bias.get("prob", 0)) > 0:  # multiplicative, so on the zero-shifted (raw-proportional) image
        c = float(bias.get("coeff", 0.3))
        spatial.append(RandBiasFieldd("image", coeff_range=(0.0, c), prob=float(bias["prob"])))

    intensity: list[Any] = []
    gamma = aug.get("gamma") or {}
    if float(gamma.get("prob", 0)) > 0:
        lo, hi = (float(v) for v in gamma.get("range", [0.7, 1.5]))
        intensity.append(RandAdjustContrastd("image", gamma=(lo, hi), prob=float(gamma["prob"]), retain_stats=True))
    shift_scale = aug.get("intensity") or {}
    if float(shift_scale.get("prob", 0)) > 0:
        if float(shift_scale.get("scale", 0)) > 0:
            intensity.append(RandScaleIntensityd("image", factors=float(shift_scale["scale"]), prob=float(shift_scale["prob"])))
        if float(shift_scale.get("shift", 0)) > 0:
            intensity.append(RandShiftIntensityd("image", offsets=float(shift_scale["shift"]), prob=float(shift_scale["prob"])))
    noise = aug.get("noise") or {}
    if float(noise.get("prob", 0)) > 0:
        intensity.append(RandGaussianNoised("image", prob=float(noise["prob"]), std=float(noise.get("std", 0.1))))
    return spatial, intensity
