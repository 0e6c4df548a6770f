"""Case files on disk: header geometry checks and pixel reading (NIfTI, NRRD, MHA; 3D or 4D MSD).

Conventions: arrays are in numpy (SimpleITK ``GetArrayFromImage``) axis order, i.e. (z, y, x) for a
volume, and :attr:`CaseData.spacing` is given in that same order, so it can be passed straight to
:mod:`training.metrics`. Images are (C, z, y, x) float32, labels (z, y, x) int16.

:func:`read_case_image` is the one reader of a case's image: it gives the (vector) SimpleITK image that
both :func:`read_case` and the preprocessing cache (:mod:`training.preprocessed` / :mod:`training.sampling`) start from, and that
``python -m training evaluate`` hands to the inference engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import SimpleITK as sitk

from .raw_dataset import Case, DatasetError, RawDataset
from .labels import map_labels, resolve_label_mapping

__all__ = [
    "CaseData",
    "Geometry",
    "GeometryMismatchError",
    "check_case_geometry",
    "read_case",
    "read_geometry",
    "read_case_image",
    "read_case_label",
    "verify_dataset",
]


class GeometryMismatchError(DatasetError):
    """Image channels and label of one case do not share size, spacing, origin and direction."""


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


def read_case_image(case: Case) -> sitk.Image:
    """The case's image as one SimpleITK image: scalar for one channel, a float32 vector image for
    several (one file per channel, or the 4th axis of a 4D MSD file). Geometry is not checked here."""
    channels: list[sitk.Image] = []
    for path in case.images:
        image = sitk.ReadImage(str(path))
        if image.GetDimension() == 4:
            size = list(image.GetSize())
            channels.extend(sitk.Extract(image, size[:3] + [0], [0, 0, 0, c]) for c in range(size[3]))
        else:
            channels.append(image)
    if len(channels) == 1:
        return channels[0]
    return sitk.Compose(*[sitk.Cast(c, sitk.sitkFloat32) for c in channels])


def read_case_label(case: Case) -> sitk.Image:
    """The case's label image (raises :class:`DatasetError` for a case without one)."""
    if case.label is None:
        raise DatasetError(f"case {case.case_id!r} has no label")
    return sitk.ReadImage(str(case.label))


def read_case(
    case: Case, label_mapping: Mapping[int, int] | str | None = None, check_geometry: bool = True
) -> CaseData:
    """Load a case's pixels: image (C, z, y, x) float32 and label (z, y, x) int16, optionally label-mapped.

    The geometry of every channel and of the label is checked first (``check_geometry``).
    Labels stored as floats are accepted when their values are whole numbers.
    """
    if check_geometry:
        check_case_geometry(case)
    image = read_case_image(case)
    array = sitk.GetArrayFromImage(image)
    array = array[None] if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array, -1, 0)
    label = None
    if case.label is not None:
        label = _as_label_array(sitk.GetArrayFromImage(read_case_label(case)), case)
        if label.shape != array.shape[1:]:  # only reachable with check_geometry=False
            raise GeometryMismatchError(
                f"case {case.case_id!r}: label shape {label.shape} != image shape {array.shape[1:]}"
            )
        if label_mapping is not None:
            label = map_labels(label, resolve_label_mapping(label_mapping))
    return CaseData(
        case_id=case.case_id,
        image=array.astype(np.float32, copy=False),
        label=label,
        spacing=tuple(float(s) for s in reversed(image.GetSpacing())),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
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
