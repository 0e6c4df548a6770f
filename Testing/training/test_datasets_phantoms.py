"""Preprocessing cache (the inference preprocess, keyed by spec), sampling, and the phantom generators."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch

from MedSegAttentionLib.preprocessing import PreprocessingSpec, preprocess
from training.data import load_dataset
from training.datasets import PatchSampler, StepBatches, load_volumes, spec_hash
from training.phantoms import render_prostate_dataset


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
