"""Preprocessing and mapping back keep the input geometry, also oblique and anisotropic."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec, normalise_intensity, preprocess, resample_to_reference
from volumes import phantom_volume


def test_round_trip_through_model_spacing_keeps_the_label_in_place() -> None:
    volume, label = phantom_volume()
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5), intensity={"method": "zscore", "nonzero": False})
    array, grid = preprocess(volume, spec)
    assert array.shape[0] == 1 and array.dtype == np.float32
    assert grid.GetSpacing() == (1.0, 1.0, 1.5)
    assert grid.GetDirection() == volume.GetDirection() and grid.GetOrigin() == volume.GetOrigin()
    # the label resampled to the model grid and back overlaps itself closely
    label_image = sitk.GetImageFromArray(label.astype(np.float32))
    label_image.CopyInformation(volume)
    on_grid = sitk.GetArrayFromImage(sitk.Resample(label_image, grid, sitk.Transform(), sitk.sitkLinear))
    back = resample_to_reference(on_grid, grid, volume) > 0.5
    dice = 2 * (back & (label > 0)).sum() / (back.sum() + (label > 0).sum())
    assert back.shape == label.shape and dice > 0.93


def test_multichannel_probabilities_map_back_channel_by_channel() -> None:
    volume, _ = phantom_volume(oblique=True)
    spec = PreprocessingSpec(target_spacing=(1.4, 1.4, 1.5))
    _, grid = preprocess(volume, spec)
    probs = np.random.default_rng(0).random((3,) + tuple(reversed(grid.GetSize()))).astype(np.float32)
    back = resample_to_reference(probs, grid, volume)
    assert back.shape == (3,) + tuple(reversed(volume.GetSize()))
    single = resample_to_reference(probs[1], grid, volume)
    np.testing.assert_allclose(back[1], single, atol=1e-6)


def test_intensity_methods() -> None:
    hu = np.array([-1000.0, -100.0, 50.0, 200.0, 3000.0])
    np.testing.assert_allclose(normalise_intensity(hu, {"method": "ct_window", "window": [-100, 200]}), [0, 0, 0.5, 1, 1])
    mr = np.array([0.0, 0.0, 10.0, 20.0, 30.0])
    z = normalise_intensity(mr, {"method": "zscore", "nonzero": True})
    np.testing.assert_allclose(z[2:], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    assert abs(float(normalise_intensity(mr, {"method": "zscore"}).std()) - 1.0) < 1e-5
