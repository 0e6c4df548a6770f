"""Preprocessing cache (the inference preprocess, keyed by spec), sampling, and the phantom generators."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.preprocessing import PreprocessingSpec, preprocess
from training.raw_dataset import load_dataset
from training.preprocessed import Volume, load_volumes, spec_hash
from training.sampling import PatchSampler, StepBatches, label_box, prepare_volume
from dataset_phantoms import render_prostate_dataset
from training.recipes import load_recipe


def test_cache_holds_exactly_the_inference_preprocessing(phantom_sets, tmp_path) -> None:
    dataset = load_dataset(phantom_sets["prostate"])
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 2.0), intensity={"method": "zscore", "nonzero": False})
    volumes = load_volumes(dataset.cases[:2], spec, tmp_path)
    folder = tmp_path / spec_hash(spec)
    assert sorted(p.name for p in folder.glob("*.npz")) == [f"{c.case_id}.npz" for c in dataset.cases[:2]]
    expected, grid = preprocess(sitk.ReadImage(str(dataset.cases[0].images[0])), spec)
    np.testing.assert_array_equal(volumes[0].image, expected)
    assert volumes[0].label.shape == expected.shape[1:] and volumes[0].spacing == (2.0, 1.0, 1.0)
    again = load_volumes(dataset.cases[:2], spec, tmp_path)  # from the cache
    np.testing.assert_array_equal(again[0].image, volumes[0].image)
    other = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5), intensity={"method": "zscore", "nonzero": False})
    assert spec_hash(other) != spec_hash(spec)


def test_cache_is_recomputed_when_a_source_file_changes(phantom_sets, tmp_path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(phantom_sets["prostate"], root)
    case = load_dataset(root).cases[0]
    spec = PreprocessingSpec(target_spacing=None, intensity={"method": "zscore", "nonzero": False})
    before = load_volumes([case], spec, tmp_path / "cache")[0]
    image = sitk.ReadImage(str(case.images[0]))
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, ::-1].copy())
    flipped.CopyInformation(image)
    sitk.WriteImage(flipped, str(case.images[0]))
    after = load_volumes([case], spec, tmp_path / "cache")[0]
    np.testing.assert_allclose(after.image, before.image[:, :, ::-1], atol=1e-5)


def test_sampling_is_a_function_of_step_and_shards_by_rank(phantom_sets) -> None:
    dataset = load_dataset(phantom_sets["liver"])
    spec = PreprocessingSpec(target_spacing=None, intensity={"method": "ct_window", "window": [-100, 200]})
    volumes = load_volumes(dataset.cases[:3], spec, None)
    recipe = {
        "sampling": {"mode": "slice", "patch_size": [24, 24, 1], "slice_context": 1, "view": "coronal", "pos": 1, "neg": 1},
        "data": {"label_mapping": "lits_liver"},
        "augment": {"flip": 0.5, "rotate": {"prob": 0.5, "degrees": 10}, "scale": {"prob": 0.5, "range": 0.1}},
    }
    sampler = PatchSampler(volumes, recipe)
    x, y = StepBatches(sampler, 7, 4)[3]
    assert x.shape == (4, 3, 24, 24) and y.shape == (4, 24, 24) and y.dtype == torch.long
    assert set(y.unique().tolist()) <= {0, 1}
    x2, _ = StepBatches(sampler, 7, 4)[3]
    assert torch.equal(x, x2)
    halves = [StepBatches(sampler, 7, 4, rank, 2)[3][0] for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), x)
    # RSTN predicts every input slice: the label of the three slices, its centre the one-slice label
    x3, y3 = StepBatches(PatchSampler(volumes, recipe, label_slices=3), 7, 4)[3]
    assert torch.equal(x3, x) and y3.shape == (4, 3, 24, 24) and torch.equal(y3[:, 1], y)
    with pytest.raises(ValueError, match="3 label slices need slice sampling with slice_context 1"):
        PatchSampler(volumes, {**recipe, "sampling": {**recipe["sampling"], "slice_context": 0}}, label_slices=3)


@pytest.mark.shared_data
def test_render_prostate_dataset_around_real_labels(shared_data, tmp_path) -> None:
    labels = shared_data / "ProstateMSDLabels" / "labelsTr"
    root = render_prostate_dataset(labels, tmp_path / "rendered", max_cases=2, seed=0)
    dataset = load_dataset(root)
    assert len(dataset) == 2 and json.loads((root / "dataset.json").read_text())["modality"] == {"0": "MRI"}
    for case in dataset.cases:
        real = sitk.ReadImage(str(labels / f"{case.case_id}.nii.gz"))
        ours = sitk.ReadImage(str(case.label))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(real))
        image = sitk.ReadImage(str(case.images[0]))
        assert image.GetSize() == real.GetSize() and np.allclose(image.GetSpacing(), real.GetSpacing())
        pixels, label = sitk.GetArrayFromImage(image).astype(float), sitk.GetArrayFromImage(real)
        assert pixels.min() >= 0 and 100 < np.median(pixels) < 1000
        assert pixels[label == 1].mean() > pixels[label == 0].mean() + 50  # bright peripheral zone


def _volume(label: np.ndarray) -> Volume:
    return Volume("v", np.random.default_rng(0).normal(size=(1, *label.shape)).astype(np.float32), label, (2.0, 1.0, 1.0))


def test_crop_to_label_is_the_ground_truth_box_grown_by_the_card_margin() -> None:
    label = np.zeros((20, 40, 40), np.int16)
    label[6:12, 10:25, 18:30] = 1  # liver
    label[8:10, 12:15, 20:23] = 2  # tumour inside
    label[19, 0, 0] = 0
    recipe = load_recipe("raunet-liver-tumour-ct")
    liver, tumour = recipe.for_stage("liver"), recipe.for_stage("tumour")
    m = recipe.card["inference"]["box_margin"]  # 10 voxels, as the cascade's box at inference
    image, lab, spacing = prepare_volume(_volume(label), tumour.data)
    box = (slice(max(6 - m, 0), 12 + m), slice(10 - m, 25 + m), slice(18 - m, 30 + m))
    np.testing.assert_array_equal(lab, (label[box] == 2).astype(np.int64))  # tumour only, inside the box
    assert image.shape == (1, *label[box].shape) and spacing == (2.0, 1.0, 1.0)
    liver_image, liver_label, liver_spacing = prepare_volume(_volume(label), liver.data)
    # the liver stage trains on the box resized to 224 x 224 in-plane, as the cascade runs it (Sec. III-F)
    boxed = (label[box] > 0).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(boxed)[:, None], size=(224, 224), mode="nearest")[:, 0]
    np.testing.assert_array_equal(liver_label, expected.long().numpy())
    assert liver_image.shape == (1, boxed.shape[0], 224, 224)
    assert liver_spacing == pytest.approx((2.0, boxed.shape[1] / 224, boxed.shape[2] / 224))
    assert abs(liver_label.mean() - boxed.mean()) < 0.01
    with pytest.raises(ValueError, match="liver_box_size"):
        load_recipe("raunet-liver-tumour-ct", overrides=["stages.liver.sampling.resize_in_plane=[200, 200]"]).for_stage("liver")
    assert label_box(label, [1, 2], 0) == (slice(6, 12), slice(10, 25), slice(18, 30))
    assert label_box(label, [3], 4) is None


def test_uniform_crops_cover_background_pos_neg_crops_find_the_organ() -> None:
    label = np.zeros((8, 64, 64), np.int16)
    label[2:6, 4:10, 4:10] = 1  # a small organ in one corner
    base = {"data": {"label_mapping": None}, "augment": {}}
    uniform = PatchSampler([_volume(label)], {**base, "sampling": {"mode": "patch", "patch_size": [16, 16, 8], "crop": "uniform"}})
    positive = PatchSampler([_volume(label)], {**base, "sampling": {"mode": "patch", "patch_size": [16, 16, 8], "pos": 1, "neg": 0}})
    uniform_hits = [bool(uniform.sample(seed)[1].any()) for seed in range(40)]
    assert all(bool(positive.sample(seed)[1].any()) for seed in range(40))
    assert 0 < sum(uniform_hits) < 20  # uniform windows mostly miss a corner organ (about 1/9 of the positions hit it)
    x, y = uniform.sample(3)
    assert x.shape == (1, 8, 16, 16) and y.shape == (8, 16, 16)
    np.testing.assert_array_equal(uniform.sample(3)[0], x)  # a pure function of the seed
