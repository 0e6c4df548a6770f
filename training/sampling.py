"""Training samples from preprocessed volumes (MONAI transforms), a pure function of a seed.

:meth:`PatchSampler.sample` draws the case and re-seeds the MONAI transforms from its seed, and
:class:`StepBatches` derives the seed from (run seed, step, global sample index). So a resumed run
draws exactly the batches it would have drawn, and two DDP ranks together draw exactly the global
batch of one process.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import BorderPadd, Compose, RandCropByPosNegLabeld, RandSpatialCropd, SpatialPadd

from MedSegAttentionLib.inference.cascades import VIEWS as VOLUME_VIEWS
from MedSegAttentionLib.inference.sizes import patch_size_zyx
from MedSegAttentionLib.inference.postprocessing import bounding_box

from .augmentation import affine_crop_size, augmentations, fov_pad
from .labels import map_labels, resolve_label_mapping
from .preprocessed import Volume

__all__ = ["PatchSampler", "StepBatches", "label_box", "prepare_volume", "sample_seed", "view_permutation"]

#: view -> permutation of (z, y, x) that puts the view's slicing axis first: the RSTN inference
#: pipeline's own definition (for (C, z, y, x) volumes) without its channel axis
VIEWS = {view: tuple(p - 1 for p in perm[1:]) for view, perm in VOLUME_VIEWS.items()}


def label_box(label: np.ndarray, values: Sequence[int], margin: int) -> tuple[slice, ...] | None:
    """Bounding box of the voxels whose raw label is in ``values``, grown by ``margin`` and clipped: the
    box the RA-UNet cascade crops at inference (:func:`~MedSegAttentionLib.inference.postprocessing.bounding_box`);
    None if no such voxel."""
    return bounding_box(np.isin(label, list(values)), int(margin))


def view_permutation(view: str) -> tuple[int, int, int]:
    try:
        return VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r}; one of {sorted(VIEWS)}") from None


def prepare_volume(volume: Volume, recipe: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """The arrays a stage trains/validates on: cropped to ``crop_to_label``, label mapped, view-permuted.

    ``crop_to_label`` is the box of the raw label values ``labels`` grown by ``margin`` (the card's
    ``inference.box_margin`` unless the recipe sets one, see :meth:`training.recipes.Recipe.for_stage`):
    RA-UNet's liver box, which the localiser gives at inference (Jin et al., Sec. IV-A/B).
    ``resize_in_plane`` (x, y) then resizes every axial slice to that size, as the RA-UNet cascade does
    at inference (256 x 256 localiser slices, the liver box at 224 x 224).
    """
    sampling = recipe["sampling"]
    image, label, spacing = volume.image, volume.label, volume.spacing
    crop = sampling.get("crop_to_label")
    if crop:
        box = label_box(label, crop["labels"], int(crop.get("margin") or 0))
        if box is not None:
            image, label = image[(slice(None),) + box], label[box]
    mapping = recipe["data"].get("label_mapping")
    label = map_labels(label.astype(np.int64), resolve_label_mapping(mapping)) if mapping else label.astype(np.int64)
    if sampling.get("resize_in_plane"):
        image, label, spacing = resize_in_plane(image, label, spacing, sampling["resize_in_plane"])
    if sampling["mode"] == "slice":
        perm = view_permutation(sampling.get("view", "axial"))
        image = np.ascontiguousarray(image.transpose(0, *[p + 1 for p in perm]))
        label = np.ascontiguousarray(label.transpose(*perm))
        spacing = tuple(spacing[p] for p in perm)
    return image, label, spacing


def resize_in_plane(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], size_xy: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(C, z, y, x) image (bilinear per slice, as the inference cascade) and (z, y, x) label (nearest)
    resized in-plane to ``size_xy``; the spacing (z, y, x) follows."""
    size_yx = (int(size_xy[1]), int(size_xy[0]))
    height, width = image.shape[-2:]
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).transpose(0, 1)
    img = torch.nn.functional.interpolate(img, size=size_yx, mode="bilinear", align_corners=False).transpose(0, 1)
    lab = torch.from_numpy(np.ascontiguousarray(label)).float()[:, None]
    lab = torch.nn.functional.interpolate(lab, size=size_yx, mode="nearest")[:, 0].round().long()
    new_spacing = (spacing[0], spacing[1] * height / size_yx[0], spacing[2] * width / size_yx[1])
    return img.contiguous().numpy(), lab.numpy(), tuple(float(v) for v in new_spacing)


def sample_seed(seed: int, step: int, index: int) -> int:
    """Seed of global sample ``index`` of ``step`` (a fixed hash, identical across processes)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class PatchSampler:
    """Draws one (image, label) training sample per seed with MONAI transforms.

    ``patch`` mode: a 3D window of ``patch_size`` (x, y, z), then the recipe's augmentations
    (:mod:`training.augmentation`: field-of-view padding before the window is drawn; 3D affine,
    flips, anisotropic resolution, bias field, gamma, intensity, noise after). ``slice`` mode: one
    slice of the role's view with ``slice_context`` neighbours each side stacked as channels (edge
    slices replicated, as the slice-wise inference does), cropped to the in-plane patch, then the 2D
    augmentations. Where the window lies (``sampling.crop``): ``pos_neg`` centres it on foreground
    or background with odds ``pos:neg`` (``RandCropByPosNegLabeld``); ``uniform`` places it uniformly
    at random (``RandSpatialCropd``), the "random cropping" of SIP-Net (Sec. 4.2) and its code.
    """

    def __init__(self, volumes: Sequence[Volume], recipe: Mapping[str, Any], label_slices: int = 1) -> None:
        """``label_slices``: in ``slice`` mode, how many slices around the centre the label holds (RSTN
        predicts every input slice: 3); the label is then (label_slices, H, W)."""
        if not volumes:
            raise ValueError("no training volumes")
        self.recipe = recipe
        sampling, aug = recipe["sampling"], recipe["augment"]
        self.mode = sampling["mode"]
        self.arrays = [prepare_volume(v, recipe)[:2] for v in volumes]
        self.background = [np.asarray(v.background, np.float32).reshape(-1, *([1] * (v.image.ndim - 1)))
                           for v in volumes]
        self.context = int(sampling.get("slice_context") or 0)
        if label_slices != 1 and (self.mode != "slice" or label_slices != 2 * self.context + 1):
            raise ValueError(f"{label_slices} label slices need slice sampling with slice_context {label_slices // 2}")
        self.label_slices = label_slices
        z, y, x = patch_size_zyx(sampling)
        pos, neg = float(sampling.get("pos", 1.0)), float(sampling.get("neg", 1.0))
        keys = ("image", "label")
        dims = 3 if self.mode == "patch" else 2
        if self.mode == "patch":
            patch: tuple[int, ...] = (z, y, x)
            size = affine_crop_size(patch, aug)
            pre = fov_pad(aug, 3) + [SpatialPadd(keys, spatial_size=size, mode="constant")]
        else:
            patch = (y, x)
            size = (2 * self.context + 1, y, x)
            pre = [
                BorderPadd(keys, spatial_border=[self.context, 0, 0], mode=("replicate", "constant")),
                SpatialPadd(keys, spatial_size=size, mode=("replicate", "constant")),
            ]
        strategy = sampling.get("crop", "pos_neg")
        if strategy == "pos_neg":
            pre.append(RandCropByPosNegLabeld(keys, "label", spatial_size=size, pos=pos, neg=neg, num_samples=1))
        elif strategy == "uniform":
            pre.append(RandSpatialCropd(keys, roi_size=size, random_size=False))
        else:
            raise ValueError(f"sampling.crop must be 'pos_neg' or 'uniform', got {strategy!r}")
        self.crop = Compose(pre)
        shifted, intensity = augmentations(aug, dims, patch)
        self.augment = Compose(shifted)
        self.intensity = Compose(intensity)

    def sample(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', *patch) float32 image and (*patch) int64 label for ``seed``."""
        rng = np.random.default_rng(seed)
        index = int(rng.integers(len(self.arrays)))
        (image, label), background = self.arrays[index], self.background[index]
        shifted = image - background if self.mode == "patch" else image  # zero fill = a zero voxel of the scan
        for transform in (self.crop, self.augment, self.intensity):
            transform.set_random_state(seed=int(rng.integers(2**31)))
        item = self.crop({"image": torch.from_numpy(shifted), "label": torch.from_numpy(label)[None]})
        item = item[0] if isinstance(item, list) else item  # RandCropByPosNegLabeld returns a list of samples
        if self.mode == "slice":
            img, lab = item["image"], item["label"]
            label = lab[0] if self.label_slices > 1 else lab[:, self.context]  # (S, H, W) or (1, H, W)
            item = {"image": img.reshape(-1, *img.shape[2:]), "label": label}
        item = self.augment(item)
        if self.mode == "patch":
            item["image"] = _plain(item["image"]) + torch.from_numpy(background)
        item = self.intensity(item)
        img = _plain(item["image"]).float().contiguous()
        lab = _plain(item["label"])
        lab = (lab if self.label_slices > 1 else lab[0]).round().long().contiguous()
        return img, lab


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors, which DDP and stacking do not need)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class StepBatches(torch.utils.data.Dataset):
    """Map-style data set indexed by training step: item ``step`` is this rank's share of that step's
    global batch (global sample indices ``rank * local .. (rank + 1) * local - 1``)."""

    def __init__(self, sampler: PatchSampler, seed: int, global_batch: int, rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        self.sampler, self.seed = sampler, int(seed)
        self.local = global_batch // world_size
        self.first = rank * self.local

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sampler.sample(sample_seed(self.seed, step, self.first + i)) for i in range(self.local)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
