"""Bad input gets a specific error and the caller's image is left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.errors import InputError
from MedSegAttentionLib.inference.imageio import read_image
from MedSegAttentionLib.inference.input_checks import validate_volume
from volumes import phantom_volume


def test_good_volume_passes_without_warnings() -> None:
    volume, _ = phantom_volume()
    assert validate_volume(volume, 1, "MR") == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sitk.Image([32, 32], sitk.sitkFloat32), "2-D image"),
        (lambda: sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), "4-D"),
        (lambda: sitk.Image([8, 8, 8], sitk.sitkFloat32) + 5.0, "constant"),
        (lambda: sitk.Image([8, 8, 1], sitk.sitkFloat32), "single slice"),
        (lambda: sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 2), "2 channel"),
    ],
)
def test_unusable_inputs_are_rejected(make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_volume(make(), 1, "MR")


def test_nan_and_absurd_spacing_are_rejected() -> None:
    volume, _ = phantom_volume()
    array = sitk.GetArrayFromImage(volume).astype(np.float32)
    array[2, 3, 4] = np.nan
    nan_volume = sitk.GetImageFromArray(array)
    with pytest.raises(InputError, match="1 NaN or infinite"):
        validate_volume(nan_volume, 1, "MR")
    far = sitk.Image(volume)
    far.SetSpacing((0.8, 0.7, 500.0))
    with pytest.raises(InputError, match="absurd voxel spacing"):
        validate_volume(far, 1, "MR")


def test_modality_mismatch_warns() -> None:
    mr, _ = phantom_volume(modality="MR")
    ct, _ = phantom_volume(modality="CT")
    assert "Hounsfield" in validate_volume(mr, 1, "CT")[0]
    assert "looks like CT" in validate_volume(ct, 1, "MR")[0]


def test_reading_missing_damaged_and_unsupported_files(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="truncated or damaged"):
        read_image(damaged)
    other = tmp_path / "scan.png"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(other)
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)
