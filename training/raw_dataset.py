"""Raw data sets in Medical Segmentation Decathlon (MSD) or nnU-Net v2 layout: ``dataset.json`` and case files.

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

Files may be NIfTI, NRRD or MetaImage (the endings the inference engine reads). Reading pixels and
checking geometry is :mod:`training.case_reading`; label mapping :mod:`training.labels`; k-fold splits
:mod:`training.splits`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from MedSegAttentionLib.inference.imageio import IMAGE_SUFFIXES

__all__ = ["Case", "DatasetError", "IMAGE_ENDINGS", "RawDataset", "load_dataset", "split_ending"]

#: File endings a case file may have: the ones the inference engine reads (".nii.gz" before ".gz").
IMAGE_ENDINGS: tuple[str, ...] = IMAGE_SUFFIXES


class DatasetError(ValueError):
    """A data set on disk is inconsistent (missing files, unreadable dataset.json, bad labels)."""


# ----------------------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class Case:
    """One training case: its identifier, image file(s) (one per channel, or one multi-channel file), label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


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
