"""Preprocessed-volume cache: each training case on the model grid, exactly as inference sees it.

Preprocessing is :func:`MedSegAttentionLib.inference.preprocessing.preprocess_with_background`, the
card's spec exactly as inference runs it (:func:`~MedSegAttentionLib.inference.preprocessing.preprocess`); the label is resampled onto the same
model grid with nearest neighbour. Each case is preprocessed once and cached as
``<cache>/<spec hash>/<case>.npz`` (float32 image, int16 raw label, spacing, the normalised value of a
zero voxel); the hash covers the spec, so a changed spacing or normalisation never reuses stale
arrays, and the source files' sizes and times are checked on every load. Labels are cached unmapped:
a stage may crop by one labelling (RA-UNet's liver box) and train on another (tumour only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec, preprocess_with_background, resample_like

from .case_reading import check_case_geometry, read_case_image, read_case_label
from .raw_dataset import Case

__all__ = ["Volume", "load_volumes", "preprocess_case", "spec_hash"]

CACHE_VERSION = 2


@dataclass
class Volume:
    """One preprocessed case on the model grid: image (C, z, y, x), raw label (z, y, x), spacing (z, y, x)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]
    #: normalised value of a zero voxel per channel: what a larger, zero-filled field of view holds
    background: tuple[float, ...] = (0.0,)


def _spec_fields(spec: PreprocessingSpec) -> dict[str, Any]:
    """Every field of the spec (so a field added to the shared definition is part of the cache key)."""
    return json.loads(json.dumps(dataclasses.asdict(spec), sort_keys=True, default=dict))


def spec_hash(spec: PreprocessingSpec) -> str:
    """Short hash of everything that changes the preprocessed arrays."""
    key = {"v": CACHE_VERSION, **_spec_fields(spec)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_case(case: Case, spec: PreprocessingSpec) -> Volume:
    """Read a case, run the inference preprocessing on the image and put the label on its grid."""
    check_case_geometry(case)
    array, grid, background = preprocess_with_background(read_case_image(case), spec)
    on_grid = resample_like(read_case_label(case), grid, sitk.sitkNearestNeighbor)
    label = np.rint(sitk.GetArrayFromImage(on_grid)).astype(np.int16)
    spacing = tuple(float(s) for s in reversed(grid.GetSpacing()))
    return Volume(case.case_id, array.astype(np.float32, copy=False), label, spacing, background)


def _stamp(case: Case) -> list[list[Any]]:
    files = list(case.images) + ([case.label] if case.label else [])
    return [[str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in files]


def load_volumes(
    cases: Sequence[Case], spec: PreprocessingSpec, cache_root: str | os.PathLike[str] | None, write: bool = True
) -> list[Volume]:
    """Preprocessed volumes of ``cases``, from ``cache_root/<spec hash>/`` where valid, else computed
    (and written when ``write``; in DDP only rank 0 writes, after which the others read)."""
    folder = Path(cache_root) / spec_hash(spec) if cache_root is not None else None
    if folder is not None and write:
        folder.mkdir(parents=True, exist_ok=True)
        spec_file = folder / "spec.json"
        if not spec_file.is_file():
            spec_file.write_text(json.dumps(_spec_fields(spec), indent=2))
    volumes = []
    for case in cases:
        path = folder / f"{case.case_id}.npz" if folder is not None else None
        stamp = _stamp(case)
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as npz:
                if json.loads(str(npz["stamp"])) == stamp:
                    volumes.append(Volume(case.case_id, npz["image"], npz["label"], tuple(npz["spacing"].tolist()),
                                          tuple(npz["background"].tolist())))
                    continue
        volume = preprocess_case(case, spec)
        if path is not None and write:
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, image=volume.image, label=volume.label, spacing=np.asarray(volume.spacing),
                     background=np.asarray(volume.background), stamp=json.dumps(stamp))
            os.replace(tmp, path)
        volumes.append(volume)
    return volumes


