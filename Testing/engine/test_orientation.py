"""A scan stored in another axis order (sagittal, coronal) or direction (RAS-first) is the same anatomy:
with the card's training orientation the network sees the same voxels, and the result lands back on
the input's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec, preprocess
from MedSegAttentionLib.modelstore.cards import ModelCard
from model_cards import install_random_model, tiny_card
from training.robustness import STORAGE_ORDERS, stored_variant
from volumes import phantom_volume

def _stored(image: sitk.Image, storage: str) -> sitk.Image:
    return stored_variant(image, image, storage)[0]


@pytest.mark.parametrize("storage", list(STORAGE_ORDERS))
def test_the_network_sees_the_same_voxels_whatever_the_storage_order(storage: str) -> None:
    volume, _ = phantom_volume(oblique=False)  # LPS, as the training data
    other = _stored(volume, storage)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(other.GetDirection()) != "LPS"
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5), orientation="LPS")
    reference, reference_grid = preprocess(volume, spec)
    array, grid = preprocess(other, spec)
    np.testing.assert_array_equal(array, reference)
    np.testing.assert_allclose(grid.GetDirection(), reference_grid.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(grid.GetOrigin(), reference_grid.GetOrigin(), atol=1e-6)
    without = preprocess(other, PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5)))[0]
    assert without.shape != reference.shape or not np.array_equal(without, reference)  # the card's choice matters


def test_a_sagittally_stored_scan_gets_the_same_segmentation_on_its_own_grid(tmp_path) -> None:
    card_data = tiny_card("tiny-oriented-mr")
    card_data["preprocessing"]["orientation"] = "LPS"
    store, model_id, _ = install_random_model(tmp_path / "store", card_data)
    card = store.card(model_id)
    volume, _ = phantom_volume(oblique=False)
    other = _stored(volume, "sagittal")
    direct = segment(volume, card, store, device="cpu", maps=False, tta=False).label
    stored = segment(other, card, store, device="cpu", maps=False, tta=False).label
    assert stored.GetSize() == other.GetSize() and stored.GetDirection() == other.GetDirection()
    assert stored.GetOrigin() == other.GetOrigin() and stored.GetSpacing() == other.GetSpacing()
    back = sitk.Resample(stored, direct, sitk.Transform(), sitk.sitkNearestNeighbor)  # the same voxel centres, reordered
    assert sitk.GetArrayFromImage(direct).any()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(direct))


def test_the_card_refuses_an_orientation_that_is_not_a_code() -> None:
    data = tiny_card("tiny-bad-orientation")
    data["preprocessing"]["orientation"] = "LPX"
    with pytest.raises(Exception, match="LPX"):
        ModelCard.from_dict(data)
