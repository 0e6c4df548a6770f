"""Reading and writing images with their full geometry (SimpleITK: NIfTI, NRRD, MHA, DICOM series)."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from .errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a file (NIfTI/NRRD/MHA) or a folder holding one DICOM series, keeping the geometry."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(
            f"unsupported file type: {path.name}; use NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), "
            "MetaImage (.mha/.mhd) or a folder with a DICOM series"
        )
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: the file is damaged or not an image ({_first_line(exc)})") from None


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if not series_ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if len(series_ids) > 1:
        raise InputError(
            f"folder {folder} holds {len(series_ids)} DICOM series ({', '.join(series_ids)}); "
            "point to a folder with one series"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the DICOM series in {folder} ({_first_line(exc)})") from None


def write_image(image: sitk.Image, path: str | os.PathLike[str], compress: bool = True) -> None:
    """Write an image; the file format follows the suffix."""
    sitk.WriteImage(image, str(path), useCompression=compress)


def geometry(image: sitk.Image) -> dict[str, list[float] | list[int]]:
    """Size, spacing, origin and direction as plain lists (for reports and comparisons)."""
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
