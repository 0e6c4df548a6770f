"""Synthetic training sets in MSD layout: seeded phantoms, and T2-like images around real prostate labels.

* :func:`synthetic_dataset` writes ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` with seeded
  phantoms: ``prostate`` (T2-like MR: a gland, PZ = 1 shell around TZ = 2, in tissue with noise and a
  bias field), ``liver`` (CT in HU: body, liver = 1 with a tumour = 2 inside) or ``pancreas`` (CT:
  body, an elongated pancreas-like organ = 1 next to a brighter vessel).
* :func:`render_prostate_dataset` renders a T2-like image around each real label map (e.g. the MSD
  Task05 labels in ``../shared/data/ProstateMSDLabels``): realistic gland shapes and geometry, with
  the real labels copied unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["phantom_case", "render_prostate_dataset", "render_t2", "synthetic_dataset", "write_dataset_json"]

KINDS = {
    "prostate": ("MRI", {"0": "background", "1": "peripheral zone", "2": "transition zone"}),
    "liver": ("CT", {"0": "background", "1": "liver", "2": "tumour"}),
    "pancreas": ("CT", {"0": "background", "1": "pancreas"}),
}


def _ellipsoid(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field / max(float(np.abs(field).max()), 1e-6)


def phantom_case(kind: str, shape_zyx: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) arrays (z, y, x) of one phantom: int16 MR grey levels or CT Hounsfield units."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape_zyx)
    label = np.zeros(shape, np.int16)
    jitter = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    if kind == "prostate":
        centre = [s * jitter(0.42, 0.58) for s in shape]
        radii = [s * jitter(0.22, 0.32) for s in shape]
        gland = _ellipsoid(shape, centre, radii)
        tz = _ellipsoid(shape, centre, [r * 0.65 for r in radii])
        label[gland] = 1
        label[tz] = 2
        image = 220.0 + 40.0 * _smooth_field(rng, shape, 3.0)
        image[gland] = 420.0
        image[tz] = 300.0 + 40.0 * _smooth_field(rng, shape, 1.5)[tz]
        image *= 1.0 + 0.15 * _smooth_field(rng, shape, 8.0)  # coil bias field
        image += rng.normal(0, 30.0, shape)
        return np.clip(image, 0, None).astype(np.int16), label
    body = _ellipsoid(shape, [s / 2 for s in shape], [shape[0], shape[1] * 0.46, shape[2] * 0.46])
    image = np.where(body, 40.0, -1000.0) + 15.0 * _smooth_field(rng, shape, 2.0)
    if kind == "liver":
        centre = [shape[0] * jitter(0.4, 0.6), shape[1] * jitter(0.4, 0.55), shape[2] * jitter(0.35, 0.5)]
        radii = [shape[0] * jitter(0.3, 0.4), shape[1] * jitter(0.22, 0.3), shape[2] * jitter(0.2, 0.28)]
        liver = _ellipsoid(shape, centre, radii) & body
        tumour_centre = [c + r * jitter(-0.3, 0.3) for c, r in zip(centre, radii)]
        tumour = _ellipsoid(shape, tumour_centre, [r * jitter(0.3, 0.45) for r in radii]) & liver
        label[liver], label[tumour] = 1, 2
        image[liver], image[tumour] = 110.0, 30.0
    elif kind == "pancreas":
        centre = [shape[0] * jitter(0.4, 0.6), shape[1] * jitter(0.45, 0.55), shape[2] * jitter(0.4, 0.6)]
        radii = [shape[0] * jitter(0.2, 0.3), shape[1] * jitter(0.1, 0.14), shape[2] * jitter(0.25, 0.32)]
        organ = _ellipsoid(shape, centre, radii) & body
        vessel = _ellipsoid(shape, [centre[0], centre[1] + radii[1] * 1.6, centre[2]], [shape[0], 2.5, 2.5]) & body
        label[organ] = 1
        image[vessel & ~organ] = 200.0
        image[organ] = 100.0
    else:
        raise ValueError(f"unknown phantom kind {kind!r}; one of {sorted(KINDS)}")
    image += rng.normal(0, 12.0, shape)
    return image.astype(np.int16), label


def write_dataset_json(root: Path, name: str, modality: str, labels: dict[str, str], case_ids: Sequence[str]) -> None:
    meta = {
        "name": name,
        "description": "synthetic phantoms (MedSegAttention training tests)",
        "modality": {"0": modality},
        "labels": labels,
        "numTraining": len(case_ids),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))


def synthetic_dataset(
    root: str | os.PathLike[str],
    kind: str = "prostate",
    n_cases: int = 6,
    shape_zyx: Sequence[int] = (16, 40, 40),
    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.5),
    seed: int = 0,
) -> Path:
    """Write an MSD-layout data set of ``n_cases`` seeded phantoms of ``kind``; returns ``root``."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    modality, labels = KINDS[kind]
    ids = []
    for i in range(n_cases):
        case_id = f"{kind}_{i:03d}"
        image, label = phantom_case(kind, shape_zyx, seed * 1000 + i)
        for array, folder in ((image, "imagesTr"), (label.astype(np.uint8), "labelsTr")):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing([float(s) for s in spacing_xyz])
            img.SetOrigin((-10.0, 5.0, 20.0))
            sitk.WriteImage(img, str(root / folder / f"{case_id}.nii.gz"))
        ids.append(case_id)
    write_dataset_json(root, f"Synthetic{kind.capitalize()}", modality, labels, ids)
    return root


def render_t2(label: np.ndarray, spacing_zyx: Sequence[float], seed: int) -> np.ndarray:
    """A T2-weighted-looking int16 image around a prostate label map (1 = PZ, 2 = TZ; > 0 = gland).

    Peripheral zone bright (~450), transition zone darker and heterogeneous (~300), a dark capsule
    rim, surrounding tissue ~220 with smooth structure, a coil bias field and Rician-like noise.
    """
    rng = np.random.default_rng(seed)
    shape = label.shape
    sigma = [max(0.5, 2.0 / s) for s in spacing_zyx]
    gland = label > 0
    image = 220.0 + 50.0 * _smooth_field(rng, shape, 4.0)
    image[label == 1] = 450.0
    tz = label >= 2
    image[tz] = 300.0 + 50.0 * _smooth_field(rng, shape, 1.5)[tz]
    rim = ndimage.binary_dilation(gland, iterations=2) & ~gland
    image[rim] = 120.0
    image = ndimage.gaussian_filter(image, sigma)
    image *= 1.0 + 0.2 * _smooth_field(rng, shape, 20.0)
    noisy = np.hypot(image + rng.normal(0, 20.0, shape), rng.normal(0, 20.0, shape))
    return np.clip(noisy, 0, 32767).astype(np.int16)


def render_prostate_dataset(
    label_dir: str | os.PathLike[str], out_root: str | os.PathLike[str], max_cases: int | None = None, seed: int = 0
) -> Path:
    """MSD-layout set with a rendered T2-like image around each real label in ``label_dir``."""
    label_dir, root = Path(label_dir), Path(out_root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in label_dir.iterdir() if p.name.endswith(".nii.gz"))[:max_cases]
    if not files:
        raise FileNotFoundError(f"no .nii.gz label maps in {label_dir}")
    ids = []
    for i, path in enumerate(files):
        case_id = path.name[: -len(".nii.gz")]
        label_image = sitk.ReadImage(str(path))
        label = sitk.GetArrayFromImage(label_image).astype(np.int16)
        image = sitk.GetImageFromArray(render_t2(label, tuple(reversed(label_image.GetSpacing())), seed + i))
        image.CopyInformation(label_image)
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case_id}.nii.gz"))
        shutil.copyfile(path, root / "labelsTr" / f"{case_id}.nii.gz")
        ids.append(case_id)
    write_dataset_json(root, "RenderedProstateT2", "MRI", KINDS["prostate"][1], ids)
    return root
