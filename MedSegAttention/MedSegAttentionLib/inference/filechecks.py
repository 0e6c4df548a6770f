"""Checks on image files before and after ITK reads them: what ITK's readers let through silently.

ITK's NIfTI reader fills a truncated file with zeros, replaces NaN voxels with 0, turns a zero voxel
spacing into 1 mm, and allocates whatever size the header claims before it notices the file is short.
:func:`check_nifti` reads the header itself (NIfTI-1 and NIfTI-2, either byte order), checks the
claimed data size against the file (streaming through a ``.nii.gz`` without allocating the volume),
and counts non-finite values of floating-point data in the same pass. Header layout:
https://nifti.nimh.nih.gov/pub/dist/src/niftilib/nifti1.h and nifti2.h.

:func:`check_dicom_slices` finds missing slices in a DICOM series from each file's Image Position
(Patient) along the slice normal, which ITK's series reader assumes evenly spaced.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

__all__ = ["NiftiHeader", "check_dicom_slices", "check_nifti", "read_nifti_header"]

CHUNK_BYTES = 8 << 20
#: NIfTI datatype code -> numpy dtype of one voxel (channels are separate voxels in the file)
_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # float32, float64, complex64/128 as pairs


@dataclass(frozen=True)
class NiftiHeader:
    dims: tuple[int, ...]  # dim[1..dim[0]]
    spacing: tuple[float, ...]  # pixdim[1..dim[0]]
    datatype: int
    bitpix: int
    vox_offset: int
    byte_order: str  # "<" or ">"

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.float64)) * self.bitpix // 8


def _damaged(path: Path, why: str) -> InputError:
    return InputError(f"cannot read {path.name}: the file is truncated or damaged ({why})")


def read_nifti_header(handle: BinaryIO, path: Path) -> NiftiHeader:
    raw = handle.read(540)
    if len(raw) < 348:
        raise _damaged(path, f"{len(raw)} bytes, shorter than a NIfTI header")
    for order in "<>":
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == 348:
            ndim = struct.unpack(order + "h", raw[40:42])[0]
            dims = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            pixdim = struct.unpack(order + "8f", raw[76:108])
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            break
        if size == 540:
            if len(raw) < 540:
                raise _damaged(path, "the NIfTI-2 header is cut short")
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dims = struct.unpack(order + "8q", raw[16:80])
            ndim = dims[0]
            pixdim = struct.unpack(order + "8d", raw[104:168])
            offset = int(struct.unpack(order + "q", raw[168:176])[0])
            break
    else:
        raise _damaged(path, "no NIfTI header")
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]) or bitpix <= 0 or bitpix % 8:
        raise _damaged(path, f"impossible header: dim {list(dims[: ndim + 1]) if 0 <= ndim <= 7 else ndim}, bitpix {bitpix}")
    offset = max(offset, 352 if size == 348 else 544)
    return NiftiHeader(tuple(int(d) for d in dims[1 : ndim + 1]), tuple(float(p) for p in pixdim[1 : ndim + 1]),
                       int(datatype), int(bitpix), offset, order)


def check_nifti(path: str | Path) -> NiftiHeader:
    """Refuse a truncated or damaged ``.nii``/``.nii.gz`` and one with NaN or infinite voxels.

    Reads the data once as a stream (``.nii.gz``) or compares sizes and scans in chunks (``.nii``);
    never allocates the whole volume.
    """
    path = Path(path)
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            header = read_nifti_header(handle, path)
            expected = header.data_bytes
            if not gz:
                actual = path.stat().st_size - header.vox_offset
                if actual < expected:
                    raise _damaged(path, f"the header promises {expected:,} bytes of voxel data, the file holds {max(actual, 0):,}")
            handle.seek(header.vox_offset)
            bad = _scan(handle, header, expected, path)
    except (EOFError, zlib.error, gzip.BadGzipFile, struct.error) as exc:
        raise _damaged(path, str(exc) or type(exc).__name__) from None
    if bad:
        raise InputError(f"input {path.name} contains {bad:,} NaN or infinite voxel value(s); "
                         "fix or mask them before segmenting (no value can be assumed for them)")
    return header


def _scan(handle: BinaryIO, header: NiftiHeader, expected: int, path: Path) -> int:
    """Read exactly ``expected`` bytes of voxel data; count non-finite floats on the way."""
    kind = _FLOAT_TYPES.get(header.datatype)
    dtype = np.dtype(header.byte_order + kind) if kind else None
    remaining, bad, carry = expected, 0, b""
    while remaining > 0:
        block = handle.read(min(CHUNK_BYTES, remaining))
        if not block:
            raise _damaged(path, f"the voxel data stops after {expected - remaining:,} of {expected:,} bytes")
        remaining -= len(block)
        if dtype is not None:
            block = carry + block
            usable = len(block) - len(block) % dtype.itemsize
            values = np.frombuffer(block[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = block[usable:]
    return bad


def check_nifti_spacing(header: NiftiHeader, image: sitk.Image, path: Path) -> None:
    """ITK reads a zero (or negative, or non-finite) pixdim as 1 mm: refuse that instead of guessing."""
    for axis, (declared, used) in enumerate(zip(header.spacing[:3], image.GetSpacing())):
        if not (np.isfinite(declared) and declared > 0) and abs(used - 1.0) < 1e-9:
            raise InputError(
                f"{path.name}: the header gives voxel spacing {declared:g} along axis {'xyz'[axis]}, so the voxel "
                "size is unknown (a reader would assume 1 mm); fix the header (pixdim) and try again"
            )


def check_dicom_slices(folder: Path, files: Sequence[str]) -> None:
    """Refuse a series with missing slices (uneven Image Position (Patient) along the slice normal)."""
    if len(files) < 3:
        return
    reader = sitk.ImageFileReader()
    positions = []
    normal = None
    for name in files:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        if not (reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037")):
            return  # no positions to check (not a cross-sectional series); ITK's geometry stands
        position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        if normal is None:
            cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
            normal = np.cross(cosines[:3], cosines[3:])
        positions.append(float(position @ normal))
    gaps = np.diff(positions)
    step = float(np.median(np.abs(gaps)))
    if step <= 0:
        raise InputError(f"DICOM series in {folder}: several slices share one position; it mixes acquisitions")
    uneven = np.flatnonzero(np.abs(np.abs(gaps) - step) > 0.25 * step)
    if uneven.size:
        i = int(uneven[0])
        missing = abs(gaps[i]) / step - 1
        raise InputError(
            f"DICOM series in {folder} has a gap: slices {i + 1} and {i + 2} of {len(files)} (at {positions[i]:.2f} mm "
            f"and {positions[i + 1]:.2f} mm along the slice normal) are {abs(gaps[i]):.2f} mm apart, the others "
            f"{step:.2f} mm (about {missing:.0f} slice(s) missing: {Path(files[i]).name} -> {Path(files[i + 1]).name}); "
            "export the complete series"
        )
