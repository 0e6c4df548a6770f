"""Reading and writing images with their full geometry (SimpleITK: NIfTI, NRRD, MHA, DICOM series)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import SimpleITK as sitk

from ..errors import InputError
from .filechecks import check_dicom_slices, check_nifti, check_nifti_spacing

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
    header = check_nifti(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    try:
        with quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: the file is damaged or not an image ({_first_line(exc)})") from None
    if header is not None:
        check_nifti_spacing(header, image, path)
    return image


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Keep ITK's multi-line warnings off the terminal: the checks here turn what matters into one-line messages."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_dicom_series(folder: Path) -> sitk.Image:
    with quiet_itk():
        series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    if not series_ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if len(series_ids) > 1:
        listing = "; ".join(
            f"{sid or '(no series UID)'}: {len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))} file(s)"
            for sid in series_ids
        )
        raise InputError(f"folder {folder} holds {len(series_ids)} DICOM series ({listing}); point to a folder with one series")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    check_dicom_slices(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with quiet_itk():
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
