"""Robustness to how scans arrive: normalisation that ignores zero padding, augmentation that shows the
network rotated, zero-filled and thick-slice windows, and the validation variants that measure it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.preprocessing import intensity_transform, normalise_intensity
from phantoms import ellipsoid_phantom
from training.augmentation import RandAnisotropicResolutiond, RandFieldOfViewPadd, affine_crop_size, augmentations
from training.preprocessed import Volume
from training.sampling import PatchSampler
from training.recipes import load_recipe
from training.robustness import make_variant, oblique_variant, padded_variant


def _mr_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (20 + 60 * rng.random((20, 24, 28))).astype(np.float32)


def test_nonzero_zscore_does_not_see_zero_padding() -> None:
    scan = _mr_like()
    padded = np.pad(scan, 10)
    spec = {"method": "zscore", "nonzero": True}
    inner = normalise_intensity(padded, spec)[10:-10, 10:-10, 10:-10]
    np.testing.assert_allclose(inner, normalise_intensity(scan, spec), atol=1e-5)
    whole = {"method": "zscore", "nonzero": False}  # the old setting shifts with the field of view
    assert np.abs(normalise_intensity(padded, whole)[10:-10, 10:-10, 10:-10] - normalise_intensity(scan, whole)).max() > 0.5


@pytest.mark.parametrize("spec", [{"method": "zscore", "nonzero": True}, {"method": "zscore", "nonzero": False},
                                  {"method": "percentile_zscore", "nonzero": True}, {"method": "ct_window", "window": [0, 50]}])
def test_intensity_transform_is_the_normalisation_and_gives_the_zero_value(spec) -> None:
    scan = _mr_like()
    transform = intensity_transform(scan, spec)
    np.testing.assert_allclose(transform(scan), normalise_intensity(scan, spec), atol=1e-6)
    zero = float(transform(np.zeros(1, np.float32))[0])
    padded = np.pad(scan, 3)
    if spec.get("nonzero"):  # a zero voxel of a padded scan reads exactly as the zero value
        assert float(normalise_intensity(padded, spec)[0, 0, 0]) == pytest.approx(zero, abs=1e-5)


def test_field_of_view_padding_adds_zeros_around_image_and_label() -> None:
    image, label = torch.ones(1, 6, 7, 8), torch.ones(1, 6, 7, 8)
    pad = RandFieldOfViewPadd(["image", "label"], voxels=[4, 5, 6], prob=1.0)
    pad.set_random_state(3)
    out = pad({"image": image, "label": label})
    border = pad.border
    assert tuple(out["image"].shape[1:]) == tuple(n + border[2 * i] + border[2 * i + 1] for i, n in enumerate((6, 7, 8)))
    assert all(0 <= b <= v for b, v in zip(border, [4, 4, 5, 5, 6, 6]))
    assert float(out["image"].sum()) == image.numel() and float(out["label"].sum()) == label.numel()


def test_anisotropic_resolution_blurs_only_the_chosen_axis() -> None:
    transform = RandAnisotropicResolutiond(["image"], max_factor=3.0, prob=1.0)
    transform.set_random_state(5)
    stripes = torch.zeros(1, 16, 16, 16)
    out = transform({"image": stripes})  # learn which axis this seed picks
    axis = transform.axis
    index = [slice(None)] * 4
    index[axis + 1] = slice(0, None, 2)
    stripes[tuple(index)] = 1.0  # alternating along the chosen axis
    transform.set_random_state(5)
    out = transform({"image": stripes})["image"]
    assert transform.factor > 1.0 and float(out.std()) < 0.8 * float(stripes.std())
    along_other = torch.zeros(1, 16, 16, 16)
    other = [slice(None)] * 4
    other[(axis + 1) % 3 + 1] = slice(0, None, 2)
    along_other[tuple(other)] = 1.0  # constant along the chosen axis: unchanged
    transform.set_random_state(5)
    np.testing.assert_allclose(transform({"image": along_other})["image"], along_other, atol=1e-5)


def _ball_volume() -> Volume:
    """The shared ellipsoid phantom as an MR-like scan (bright organ, darker tissue, no zeros), z-scored over
    non-zero voxels as the left-atrium card does."""
    image, label = ellipsoid_phantom((24, 40, 40), seed=3, noise=0.03)
    raw = 30.0 + 70.0 * image.clip(0, None) + 1.0
    transform = intensity_transform(raw, {"method": "zscore", "nonzero": True})
    return Volume("ball", transform(raw)[None], label.astype(np.int16), (1.0, 1.0, 1.0), (float(transform(np.zeros(1))[0]),))


def _recipe(**augment: object) -> dict:
    return {"sampling": {"mode": "patch", "patch_size": [16, 16, 16], "pos": 1, "neg": 1},
            "data": {"label_mapping": None}, "augment": augment}


def test_zero_filled_field_of_view_reads_as_the_scans_zero_value() -> None:
    volume = _ball_volume()
    sampler = PatchSampler([volume], _recipe(fov_pad={"prob": 1.0, "voxels": [30, 30, 30]}))
    values = torch.cat([sampler.sample(seed)[0].flatten() for seed in range(12)])
    at_zero = torch.isclose(values, torch.tensor(volume.background[0]), atol=1e-5)
    assert 0 < float(at_zero.float().mean()) < 1  # some windows reach into the padding
    assert float(values.min()) >= volume.background[0] - 1e-5


def test_rotated_windows_keep_image_and_label_aligned() -> None:
    volume = _ball_volume()
    sampler = PatchSampler([volume], _recipe(affine={"prob": 1.0, "degrees": 35, "scale": 0.2}))
    for seed in range(6):
        image, label = sampler.sample(seed)
        assert image.shape == (1, 16, 16, 16) and label.shape == (16, 16, 16)
        bright = image[0] > (volume.image.max() + volume.image.min()) / 2
        assert float((bright == (label > 0)).float().mean()) > 0.9
    again = sampler.sample(3)
    assert torch.equal(again[0], sampler.sample(3)[0])  # a pure function of the seed


def test_affine_draws_a_larger_window_and_is_3d_only() -> None:
    assert affine_crop_size((16, 32, 32), {"affine": {"prob": 0.5}}) == (24, 48, 48)
    assert affine_crop_size((16, 32, 32), {}) == (16, 32, 32)
    with pytest.raises(ValueError, match="3D patches"):
        augmentations({"affine": {"prob": 1.0, "degrees": 10}}, 2, (32, 32))


def test_left_atrium_recipe_covers_how_scans_arrive() -> None:
    recipe = load_recipe("sipnet-left-atrium-mr-compact").for_stage(None)
    aug = recipe["augment"]
    assert aug["affine"]["prob"] > 0 and aug["affine"]["degrees"] >= 30
    assert aug["fov_pad"]["prob"] > 0 and min(aug["fov_pad"]["voxels"]) > 0
    assert aug["low_resolution"]["prob"] > 0 and aug["low_resolution"]["max_factor"] >= 2
    assert aug["gamma"]["prob"] > 0 and aug["bias_field"]["prob"] > 0
    assert recipe.card["preprocessing"]["intensity"] == {"method": "percentile_zscore", "nonzero": True,
                                                        "percentiles": [0.05, 99.95]}
    assert recipe.card["preprocessing"]["orientation"] == "LPS"
    assert recipe.network_config()["attention"] == "paper"


def _case() -> tuple[sitk.Image, sitk.Image]:
    z, y, x = np.mgrid[:30, :40, :50]
    inside = ((z - 15) ** 2 / 81 + (y - 20) ** 2 / 144 + (x - 25) ** 2 / 225) < 1
    image = sitk.GetImageFromArray(np.where(inside, 120, 40).astype(np.uint8))
    label = sitk.GetImageFromArray(inside.astype(np.uint8))
    for volume in (image, label):
        volume.SetSpacing((0.625, 0.625, 0.625))
        volume.SetOrigin((10.0, -5.0, 3.0))
    return image, label


def test_padded_variant_keeps_the_anatomy_in_place() -> None:
    image, label = _case()
    big, big_label = padded_variant(image, label)
    assert big.GetSize() == (50 + 96, 40 + 96, 30 + 64)
    assert sitk.GetArrayFromImage(big_label).sum() == sitk.GetArrayFromImage(label).sum()
    centre = image.TransformIndexToPhysicalPoint((25, 20, 15))
    assert big.TransformPhysicalPointToIndex(centre) == (25 + 48, 20 + 48, 15 + 32)


def test_oblique_variant_is_rotated_thick_sliced_and_covers_the_organ() -> None:
    image, label = _case()
    tilted, tilted_label = oblique_variant(image, label)
    assert tilted.GetSpacing() == pytest.approx((0.7, 0.9, 2.5))
    direction = np.asarray(tilted.GetDirection()).reshape(3, 3)
    assert np.allclose(direction @ direction.T, np.eye(3)) and abs(direction[2, 2]) < 0.9  # oblique
    volume = sitk.GetArrayFromImage(tilted_label).sum() * 0.7 * 0.9 * 2.5
    original = sitk.GetArrayFromImage(label).sum() * 0.625**3
    assert volume == pytest.approx(original, rel=0.15)  # the whole organ is on the new grid
    with pytest.raises(ValueError, match="unknown variant"):
        make_variant("sideways", image, label)


def test_sagittal_variant_is_the_same_image_stored_in_another_axis_order() -> None:
    image, label = _case()
    stored, stored_label = make_variant("sagittal", image, label)
    assert stored.GetSize() == (40, 30, 50)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(stored.GetDirection()) != \
        sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    index = (25, 20, 15)  # the same physical point carries the same value
    point = image.TransformIndexToPhysicalPoint(index)
    assert stored[stored.TransformPhysicalPointToIndex(point)] == image[index]
    assert stored_label[stored_label.TransformPhysicalPointToIndex(point)] == label[index]


def test_spike_voxels_do_not_shift_the_left_atrium_normalisation() -> None:
    """200 voxels at 50 x the maximum (the ``spikes`` variant) leave every other voxel's normalised value
    where it was with the cards' clipped z-score; a plain z-score squeezes the whole scan towards zero."""
    from MedSegAttentionLib.inference.preprocessing import normalise_intensity

    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray((rng.gamma(4.0, 20.0, (64, 128, 128)) * (rng.random((64, 128, 128)) > 0.1)).astype(np.float32))
    spiked, _ = make_variant("spikes", image, image)
    clean, dirty = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(spiked)
    untouched = clean == dirty
    assert (~untouched).sum() >= 190
    card = load_recipe("sipnet-left-atrium-mr-compact").card["preprocessing"]["intensity"]
    robust = np.abs(normalise_intensity(dirty, card) - normalise_intensity(clean, card))[untouched]
    plain = {"method": "zscore", "nonzero": True}
    naive = np.abs(normalise_intensity(dirty, plain) - normalise_intensity(clean, plain))[untouched]
    assert np.percentile(robust, 99.9) < 0.02 and naive.mean() > 0.3  # (the few brightest voxels sit at the clip)


def test_map_spread_tells_a_wash_from_a_map_that_outlines_the_organ() -> None:
    from training.evaluate import map_spread

    organ = np.zeros((20, 30, 30), bool)
    organ[8:12, 10:20, 10:20] = True
    wash = np.full(organ.shape, 0.55) + np.random.default_rng(0).normal(0, 0.01, organ.shape)
    outline = np.where(organ, 0.9, 0.1)
    assert map_spread(wash, organ, (1.0, 1.0, 1.0), margin_mm=2) < 0.05
    assert map_spread(outline, organ, (1.0, 1.0, 1.0), margin_mm=2) == pytest.approx(0.8)
    assert map_spread(outline, organ, (0.5, 0.5, 0.5), margin_mm=1) == pytest.approx(0.8)  # margin in mm, not voxels
    assert np.isnan(map_spread(outline, np.zeros_like(organ), (1.0, 1.0, 1.0)))
