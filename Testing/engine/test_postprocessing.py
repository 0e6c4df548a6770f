"""Label post-processing: the fast paths make the same decisions as the plain definitions."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from MedSegAttentionLib.inference.engine import _label_on_input_grid
from MedSegAttentionLib.inference.postprocessing import bounding_box, class_index, keep_largest_component
from MedSegAttentionLib.inference.preprocessing import model_grid, resample_to_reference
from MedSegAttentionLib.modelstore.cards import ModelCard
from model_cards import tiny_card


def test_class_index_is_the_first_argmax_including_ties() -> None:
    scores = torch.rand(4, 6, 7, 8)
    scores[2, 0] = scores[1, 0]  # ties: the first class wins, as in argmax
    scores[:, 1] = 0.25
    assert torch.equal(class_index(scores).long(), scores.argmax(0))
    assert class_index(scores).dtype == torch.uint8


def _reference_largest(labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(labels)
    for value in np.unique(labels[labels != 0]):
        components, count = ndimage.label(labels == value, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(components.ravel())[1:]
        out[components == 1 + int(np.argmax(sizes))] = value
    return out


def test_largest_component_per_label_matches_a_full_volume_search() -> None:
    labels = np.zeros((30, 40, 50), np.uint8)
    labels[5:15, 5:20, 5:20] = 1
    labels[20:22, 30:33, 40:45] = 1  # smaller island of label 1: removed
    labels[8:12, 25:35, 30:48] = 2
    labels[25, 2, 2] = 2  # a voxel of label 2 far away: removed
    labels[14, 19, 19] = 0
    kept = keep_largest_component(labels)
    assert np.array_equal(kept, _reference_largest(labels))
    assert kept[20, 30, 40] == 0 and kept[25, 2, 2] == 0 and kept[10, 10, 10] == 1
    assert not keep_largest_component(np.zeros((4, 4, 4), np.uint8)).any()
    box = np.zeros((6, 6, 6), np.uint8)
    box[1:4, 1:4, 1:4] = 5  # a label that fills its own bounding box
    assert np.array_equal(keep_largest_component(box), box)


def test_bounding_box_with_margin_clipped_to_the_array() -> None:
    mask = np.zeros((10, 12, 14), bool)
    mask[2:5, 0:3, 9:14] = True
    assert bounding_box(mask, 1) == (slice(1, 6), slice(0, 4), slice(8, 14))
    assert bounding_box(np.zeros((3, 3, 3), bool), 2) is None


def _oblique_reference() -> sitk.Image:
    image = sitk.Image([40, 36, 18], sitk.sitkInt16)
    image.SetSpacing([0.7, 0.9, 2.5])
    rotation = sitk.VersorTransform((1.0, 1.0, 0.0), np.deg2rad(30))
    image.SetDirection(rotation.GetMatrix())
    image.SetOrigin((-12.0, 4.0, 30.0))
    return image


def _smooth_probabilities(classes: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = ndimage.gaussian_filter(rng.normal(size=(classes, *shape)), sigma=(0, 3, 3, 3)) * 20
    return torch.softmax(torch.from_numpy(logits), 0).numpy().astype(np.float32)


def test_label_mapping_is_the_argmax_of_all_resampled_channels() -> None:
    """Two classes: the resampled difference; several: every channel; unchanged grid: no resampling."""
    reference = _oblique_reference()
    for labels, spacing in ((1, (1.25, 1.25, 1.25)), (2, (1.0, 1.1, 1.6)), (2, None)):
        data = tiny_card()
        data["labels"] = [{**data["labels"][0], "value": 3 + i, "name": f"label {i}"} for i in range(labels)]
        data["inference"] = {**data["inference"], "largest_component": False}
        card = ModelCard.from_dict(data)
        grid = reference if spacing is None else model_grid(reference, spacing)
        probabilities = _smooth_probabilities(labels + 1, grid.GetSize()[::-1], seed=labels)
        expected = np.array([0, 3, 4])[np.argmax(resample_to_reference(probabilities, grid, reference), axis=0)]
        label = _label_on_input_grid(torch.from_numpy(probabilities), grid, reference, card)
        assert np.array_equal(sitk.GetArrayFromImage(label), expected)
        assert label.GetDirection() == reference.GetDirection() and 0 < (expected > 0).mean() < 1


def test_map_values_are_clipped_to_a_fixed_range_and_kept_with_a_data_range() -> None:
    """A card map with a fixed range (default [0, 1]) is clipped to it; ``range: "data"`` (raw values such
    as RSTN's saliency weights) keeps its values, and its range is their minimum and maximum."""
    from MedSegAttentionLib.inference.engine import _map_on_input_grid, fixed_range, map_value_range

    grid = sitk.Image([6, 5, 4], sitk.sitkFloat32)
    values = np.linspace(-1.5, 2.5, 120, dtype=np.float32).reshape(1, 4, 5, 6)
    plain_entry, raw_entry = {"name": "attention"}, {"name": "saliency", "range": "data"}
    plain = _map_on_input_grid(values, grid, grid, fixed_range(plain_entry))
    raw = _map_on_input_grid(values, grid, grid, fixed_range(raw_entry))
    assert sitk.GetArrayViewFromImage(plain).min() == 0.0 and sitk.GetArrayViewFromImage(plain).max() == 1.0
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(raw), values[0])
    assert map_value_range(plain_entry, plain) == (0.0, 1.0)
    assert map_value_range(raw_entry, raw) == (-1.5, 2.5)
    assert map_value_range({"name": "g", "range": [-1, 1]}, raw) == (-1.0, 1.0)
