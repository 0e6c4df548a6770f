"""Raw data sets in Medical Segmentation Decathlon (MSD) or nnU-Net v2 layout, label mapping, k-fold splits.

Layout (``root/``)::

    dataset.json
    imagesTr/  <case>.nii.gz (MSD, one file per case; 4D for several channels)
               or <case>_0000<ending>, <case>_0001<ending>, ... (nnU-Net, one file per channel)
    labelsTr/  <case><ending>

``dataset.json`` is read in either dialect:

* MSD: ``"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...]``,
  ``"modality": {"0": "MRI"}``, ``"labels": {"0": "background", "1": "left atrium"}``. A listed image
  that is absent but has ``_0000``-suffixed channel files next to it (an MSD set converted by nnU-Net)
  is resolved to those files.
* nnU-Net v2: ``"channel_names": {"0": "T2"}``, ``"labels": {"background": 0, "PZ": 1}``,
  ``"file_ending": ".nii.gz"``; cases are the identifiers of ``imagesTr/*_0000<ending>`` (or the
  optional ``"dataset"`` dict of explicit file lists).

Conventions: arrays are in numpy (SimpleITK ``GetArrayFromImage``) axis order, i.e. (z, y, x) for a
volume, and :attr:`CaseData.spacing` is given in that same order, so it can be passed straight to
:mod:`training.metrics`. Images are (C, z, y, x) float32, labels (z, y, x) int16.

Splits follow nnU-Net's ``splits_final.json``: a list of ``{"train": [...], "val": [...]}`` per fold,
seeded and stored as ``splits.json`` in a directory shared by all folds of an experiment; a file that
is already there is reused, so every fold (and every rerun) sees the same partition.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

__all__ = [
    "Case",
    "CaseData",
    "DatasetError",
    "Geometry",
    "GeometryMismatchError",
    "LABEL_MAPPINGS",
    "RawDataset",
    "check_case_geometry",
    "fold_cases",
    "load_dataset",
    "load_or_create_splits",
    "make_splits",
    "map_labels",
    "read_case",
    "read_geometry",
    "resolve_label_mapping",
    "verify_dataset",
]

#: File endings SimpleITK reads that a case file may have (longest first, so ".nii.gz" wins over ".gz").
IMAGE_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

SPLITS_FILE = "splits.json"

#: Named label mappings (old value -> new value; unlisted values become background).
LABEL_MAPPINGS: dict[str, dict[int, int]] = {
    "prostate_gland": {1: 1, 2: 1},  # MSD Task05: PZ (1) + TZ (2) -> whole gland
    "prostate_zones": {1: 1, 2: 2},
    "lits_liver": {1: 1, 2: 1},  # LiTS / MSD Task03: liver incl. tumour -> liver
    "lits_tumour": {2: 1},  # tumour only
    "lits_liver_tumour": {1: 1, 2: 2},
}


class DatasetError(ValueError):
    """A data set on disk is inconsistent (missing files, unreadable dataset.json, bad labels)."""


class GeometryMismatchError(DatasetError):
    """Image channels and label of one case do not share size, spacing, origin and direction."""


# ----------------------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class Case:
    """One training case: its identifier, image file(s) (one per channel, or one multi-channel file), label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class Geometry:
    """Header geometry of an image file in SimpleITK (x, y, z) order, spatial axes only."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    channels: int = 1

    def differences(self, other: Geometry, rtol: float = 1e-4, atol: float = 1e-3) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when they match within tolerance)."""
        out: list[str] = []
        if self.size != other.size:
            out.append(f"size {self.size} != {other.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=0):
            out.append(f"spacing {self.spacing} != {other.spacing}")
        origin_tol = atol + rtol * max(1.0, float(np.max(np.abs(self.origin))))
        if not np.allclose(self.origin, other.origin, rtol=0, atol=origin_tol):
            out.append(f"origin {self.origin} != {other.origin}")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=1e-4):
            out.append(f"direction {self.direction} != {other.direction}")
        return out


@dataclass
class CaseData:
    """Pixel data of one case; arrays and ``spacing`` in numpy (z, y, x) axis order."""

    case_id: str
    image: np.ndarray  # (C, *spatial) float32
    label: np.ndarray | None  # (*spatial) int16
    spacing: tuple[float, ...]
    origin: tuple[float, ...]  # SimpleITK (x, y, z) order, physical mm
    direction: tuple[float, ...]  # SimpleITK row-major direction matrix


@dataclass
class RawDataset:
    """A raw data set: its folder, ``dataset.json`` metadata and the sorted list of cases."""

    root: Path
    name: str
    channel_names: dict[int, str]
    labels: dict[int, str]  # value -> name, background included
    file_ending: str
    cases: list[Case] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def num_channels(self) -> int:
        return max(1, len(self.channel_names))

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(f"no case {case_id!r} in {self.root}")

    def __len__(self) -> int:
        return len(self.cases)


# ----------------------------------------------------------------------------------------------- reading
def split_ending(name: str) -> tuple[str, str]:
    """``"x_0000.nii.gz"`` -> ``("x_0000", ".nii.gz")``; unknown endings raise :class:`DatasetError`."""
    lower = name.lower()
    for ending in IMAGE_ENDINGS:
        if lower.endswith(ending):
            return name[: -len(ending)], name[-len(ending) :]
    raise DatasetError(f"{name}: not an image file SimpleITK reads here (endings: {', '.join(IMAGE_ENDINGS)})")


def load_dataset(root: str | os.PathLike[str], require_labels: bool = True) -> RawDataset:
    """Read ``root/dataset.json`` (MSD or nnU-Net v2 dialect) and resolve every case's files.

    Raises :class:`DatasetError` (a ``ValueError``) naming the case and file when a listed image or
    label is missing, and ``FileNotFoundError`` when ``root`` or ``dataset.json`` is absent.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder {root} does not exist")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: a raw data set needs a dataset.json (MSD or nnU-Net v2)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{meta_path}: not valid JSON ({err})") from None

    raw_channels = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    channel_names = {int(k): str(v) for k, v in raw_channels.items()}
    labels = _parse_labels(meta.get("labels", {}), meta_path)
    if "training" in meta:
        cases, ending = _msd_cases(root, meta["training"], len(channel_names), require_labels)
    elif "dataset" in meta:
        cases, ending = _explicit_cases(root, meta["dataset"], require_labels), str(meta.get("file_ending", ""))
    else:
        ending = str(meta.get("file_ending", ".nii.gz"))
        cases = _nnunet_cases(root, ending, len(channel_names), require_labels)
    if not cases:
        raise DatasetError(f"{root}: no training cases found")
    duplicates = sorted(i for i, n in Counter(c.case_id for c in cases).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{root}: duplicate case identifiers {duplicates[:5]}")
    declared = meta.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        warnings.warn(f"{meta_path}: numTraining is {declared} but {len(cases)} cases were found", stacklevel=2)
    return RawDataset(
        root=root,
        name=str(meta.get("name", root.name)),
        channel_names=channel_names,
        labels=labels,
        file_ending=ending,
        cases=sorted(cases, key=lambda c: c.case_id),
        metadata=meta,
    )


def _parse_labels(raw: Mapping[str, Any], where: Path) -> dict[int, str]:
    """MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}`` -> ``{0: "background"}``."""
    out: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError(f"{where}: region-based label {key!r}: {value} is not supported; map labels instead")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[int(value)] = str(key)  # nnU-Net v2: name -> value
        else:
            try:
                out[int(key)] = str(value)  # MSD: "value" -> name
            except ValueError:
                raise DatasetError(f"{where}: cannot read label entry {key!r}: {value!r}") from None
    return dict(sorted(out.items()))


def _missing(root: Path, case_id: str, what: str, path: Path) -> DatasetError:
    return DatasetError(f"{root}: case {case_id!r}: {what} file {path} is missing")


def _msd_cases(
    root: Path, entries: Iterable[Mapping[str, str]], n_channels: int, require_labels: bool
) -> tuple[list[Case], str]:
    cases: list[Case] = []
    ending = ""
    for entry in entries:
        image = root / entry["image"]
        stem, ending = split_ending(image.name)
        case_id = stem[:-5] if stem.endswith("_0000") else stem
        if image.is_file():
            images: tuple[Path, ...] = (image,)
        else:  # MSD list, nnU-Net converted files: x.nii.gz -> x_0000.nii.gz, x_0001.nii.gz, ...
            images = tuple(image.with_name(f"{case_id}_{c:04d}{ending}") for c in range(n_channels))
            if not all(p.is_file() for p in images):
                raise _missing(root, case_id, "image", image)
        label = root / entry["label"] if entry.get("label") else None
        if label is not None and not label.is_file():
            raise _missing(root, case_id, "label", label)
        if label is None and require_labels:
            raise DatasetError(f"{root}: case {case_id!r} has no label entry in dataset.json")
        cases.append(Case(case_id, images, label))
    return cases, ending


def _explicit_cases(root: Path, entries: Mapping[str, Mapping[str, Any]], require_labels: bool) -> list[Case]:
    cases = []
    for case_id, entry in entries.items():
        images = tuple(root / p for p in entry["images"])
        for p in images:
            if not p.is_file():
                raise _missing(root, case_id, "image", p)
        label = root / entry["label"] if entry.get("label") else None
        if label is not None and not label.is_file():
            raise _missing(root, case_id, "label", label)
        if label is None and require_labels:
            raise DatasetError(f"{root}: case {case_id!r} has no label")
        cases.append(Case(str(case_id), images, label))
    return cases


def _nnunet_cases(root: Path, ending: str, n_channels: int, require_labels: bool) -> list[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} is missing")
    suffix = f"_0000{ending}"
    ids = sorted(p.name[: -len(suffix)] for p in images_dir.iterdir() if p.name.endswith(suffix))
    cases = []
    for case_id in ids:
        images = tuple(images_dir / f"{case_id}_{c:04d}{ending}" for c in range(n_channels))
        for p in images:
            if not p.is_file():
                raise _missing(root, case_id, "image (channel)", p)
        label: Path | None = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            if require_labels:
                raise _missing(root, case_id, "label", label)
            label = None
        cases.append(Case(case_id, images, label))
    return cases


def read_geometry(path: str | os.PathLike[str]) -> Geometry:
    """Geometry from the file header only (no pixel data is read). A 4D file counts its 4th axis as channels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DatasetError(f"{path}: cannot read image header ({str(err).strip().splitlines()[-1]})") from None
    dim = reader.GetDimension()
    size, spacing, origin = reader.GetSize(), reader.GetSpacing(), reader.GetOrigin()
    direction = np.asarray(reader.GetDirection()).reshape(dim, dim)
    spatial = min(dim, 3)
    channels = int(size[3]) if dim == 4 else reader.GetNumberOfComponents()
    return Geometry(
        size=tuple(int(s) for s in size[:spatial]),
        spacing=tuple(float(s) for s in spacing[:spatial]),
        origin=tuple(float(o) for o in origin[:spatial]),
        direction=tuple(float(d) for d in direction[:spatial, :spatial].ravel()),
        channels=int(channels),
    )


def check_case_geometry(case: Case, rtol: float = 1e-4, atol: float = 1e-3) -> Geometry:
    """Geometry of a case, after checking (headers only) that all channels and the label agree.

    Raises :class:`GeometryMismatchError` naming the files and what differs.
    """
    reference = read_geometry(case.images[0])
    others = list(case.images[1:]) + ([case.label] if case.label is not None else [])
    for path in others:
        geo = read_geometry(path)
        diff = reference.differences(geo, rtol=rtol, atol=atol)
        if diff:
            role = "label" if path == case.label else "image channel"
            raise GeometryMismatchError(
                f"case {case.case_id!r}: {role} {path} does not match image {case.images[0]}: " + "; ".join(diff)
            )
    return reference


def verify_dataset(dataset: RawDataset) -> dict[str, Geometry]:
    """Check every case's geometry (headers only); returns case id -> geometry, raises on the first mismatch."""
    return {case.case_id: check_case_geometry(case) for case in dataset.cases}


def _image_to_channels(image: sitk.Image) -> list[np.ndarray]:
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 4:  # MSD multi-modal: (C, z, y, x)
        return [a for a in array]
    if image.GetNumberOfComponentsPerPixel() > 1:  # vector pixels: (z, y, x, C)
        return [array[..., c] for c in range(array.shape[-1])]
    return [array]


def _spatial_geometry(image: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    dim = image.GetDimension()
    spatial = min(dim, 3)
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)[:spatial, :spatial]
    return (
        tuple(float(s) for s in image.GetSpacing()[:spatial]),
        tuple(float(o) for o in image.GetOrigin()[:spatial]),
        tuple(float(d) for d in direction.ravel()),
    )


def read_case(
    case: Case, label_mapping: Mapping[int, int] | str | None = None, check_geometry: bool = True
) -> CaseData:
    """Load a case's pixels: image (C, z, y, x) float32 and label (z, y, x) int16, optionally label-mapped.

    The geometry of every channel and of the label is checked first (``check_geometry``).
    Labels stored as floats are accepted when their values are whole numbers.
    """
    if check_geometry:
        check_case_geometry(case)
    channels: list[np.ndarray] = []
    first: sitk.Image | None = None
    for path in case.images:
        img = sitk.ReadImage(str(path))
        if first is None:
            first = img
        channels.extend(_image_to_channels(img))
    assert first is not None
    spacing_xyz, origin, direction = _spatial_geometry(first)
    image = np.stack(channels).astype(np.float32, copy=False)
    label = None
    if case.label is not None:
        label = _as_label_array(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))), case)
        if label.shape != image.shape[1:]:  # only reachable with check_geometry=False
            raise GeometryMismatchError(
                f"case {case.case_id!r}: label shape {label.shape} != image shape {image.shape[1:]}"
            )
        if label_mapping is not None:
            label = map_labels(label, resolve_label_mapping(label_mapping))
    return CaseData(
        case_id=case.case_id,
        image=image,
        label=label,
        spacing=tuple(reversed(spacing_xyz)),
        origin=origin,
        direction=direction,
    )


def _as_label_array(array: np.ndarray, case: Case) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(array, rounded, atol=1e-3):
            raise DatasetError(f"case {case.case_id!r}: label {case.label} has non-integer values")
        array = rounded
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int16).max):
        raise DatasetError(f"case {case.case_id!r}: label values outside [0, 32767] in {case.label}")
    return array.astype(np.int16, copy=False)


# ----------------------------------------------------------------------------------------------- labels
def resolve_label_mapping(spec: Mapping[Any, Any] | str) -> dict[int, int]:
    """A preset name from :data:`LABEL_MAPPINGS` or a dict (keys may be strings, as read from YAML/JSON)."""
    if isinstance(spec, str):
        try:
            return dict(LABEL_MAPPINGS[spec])
        except KeyError:
            raise ValueError(f"unknown label mapping {spec!r}; presets: {', '.join(sorted(LABEL_MAPPINGS))}") from None
    out = {int(k): int(v) for k, v in spec.items()}
    if any(k < 0 or v < 0 for k, v in out.items()):
        raise ValueError(f"label mapping values must be non-negative: {out}")
    return out


def map_labels(label: np.ndarray, mapping: Mapping[int, int] | str, unmapped: str = "zero") -> np.ndarray:
    """Apply ``old -> new`` to a label array with a lookup table.

    ``unmapped`` says what happens to values not in ``mapping``: ``"zero"`` (background; the default,
    so ``{2: 1}`` keeps only class 2), ``"keep"`` (unchanged) or ``"error"`` (raise ``ValueError``).
    """
    table = resolve_label_mapping(mapping)
    if unmapped not in ("zero", "keep", "error"):
        raise ValueError(f"unmapped must be 'zero', 'keep' or 'error', got {unmapped!r}")
    array = np.asarray(label)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"label array must be integer, got {array.dtype}")
    if array.size == 0:
        return array.copy()
    if array.min() < 0:
        raise ValueError("label arrays must not hold negative values")
    top = int(array.max())
    if unmapped == "error":
        present = set(np.unique(array).tolist())
        missing = sorted(present - set(table))
        if missing:
            raise ValueError(f"label values {missing} are not in the mapping {table}")
    lut = np.arange(top + 1, dtype=np.int64) if unmapped == "keep" else np.zeros(top + 1, dtype=np.int64)
    for old, new in table.items():
        if old <= top:
            lut[old] = new
    out_dtype = np.result_type(array.dtype, np.min_scalar_type(max(table.values(), default=0)))
    return lut[array].astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------------------------- splits
def make_splits(case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Seeded k-fold partition of ``case_ids`` (order-independent: ids are sorted first).

    Returns one ``{"train": [...], "val": [...]}`` per fold; the validation sets are disjoint and
    together cover every case, fold sizes differ by at most one.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case identifiers must be unique")
    if not 2 <= n_folds <= len(ids):
        raise ValueError(f"n_folds must be between 2 and the number of cases ({len(ids)}), got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.array_split(order, n_folds)
    splits = []
    for k in range(n_folds):
        val = sorted(ids[i] for i in folds[k])
        val_set = set(val)
        splits.append({"train": [i for i in ids if i not in val_set], "val": val})
    return splits


def load_or_create_splits(
    directory: str | os.PathLike[str], case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """Splits from ``directory/splits.json``, created with :func:`make_splits` when the file is absent.

    ``directory`` is the experiment folder shared by all folds (each fold's output sits below it). An
    existing file is reused as is (like nnU-Net's ``splits_final.json``); it must name only known
    cases and have ``n_folds`` folds, else ``ValueError`` says to delete it. Cases missing from the
    file are reported with a warning and are not used.
    """
    path = Path(directory) / SPLITS_FILE
    known = set(case_ids)
    if path.is_file():
        splits = json.loads(path.read_text())
        if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
            raise ValueError(f"{path}: expected a list of {{'train': [...], 'val': [...]}}; delete it to regenerate")
        if len(splits) != n_folds:
            raise ValueError(f"{path} has {len(splits)} folds but {n_folds} were asked for; delete it to regenerate")
        listed = {i for s in splits for i in s["train"] + s["val"]}
        unknown = sorted(listed - known)
        if unknown:
            raise ValueError(f"{path} names cases not in the data set: {unknown[:5]}; delete it to regenerate")
        unused = sorted(known - listed)
        if unused:
            warnings.warn(f"{path}: {len(unused)} case(s) of the data set are in no fold: {unused[:5]}", stacklevel=2)
        return splits
    splits = make_splits(list(case_ids), n_folds=n_folds, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, splits)
    return splits


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def fold_cases(
    dataset: RawDataset, splits: Sequence[Mapping[str, Sequence[str]]], fold: int | str
) -> tuple[list[Case], list[Case]]:
    """(train, val) cases of ``fold``; ``fold="all"`` trains on every case with an empty validation list."""
    if fold == "all":
        return list(dataset.cases), []
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ValueError(f"fold must be 'all' or an integer in [0, {len(splits)}), got {fold!r}")
    by_id = {c.case_id: c for c in dataset.cases}
    return [by_id[i] for i in splits[fold]["train"]], [by_id[i] for i in splits[fold]["val"]]
