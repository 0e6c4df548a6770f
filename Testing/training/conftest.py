"""Fixtures of the training tests: tiny synthetic MSD data sets and tiny-network recipe overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dataset_phantoms import synthetic_dataset

torch.set_num_threads(1)

COMMON = ["train.num_workers=0", "train.log_every=1", "validation.batch_size=4"]

#: recipe name -> (phantom kind, overrides that make the networks tiny and the runs a few steps)
TINY: dict[str, tuple[str, list[str]]] = {
    "sipnet-prostate-mr": ("prostate", [
        "network={init_filters: 8, growth_rate: 4, down_layers: [1, 1, 1], up_layers: [1, 1, 1]}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "sipnet-left-atrium-mr": ("prostate", [  # a one-label MR set: the phantom's gland stands in for the atrium
        "network={init_filters: 8, growth_rate: 4, down_layers: [1, 1, 1], up_layers: [1, 1, 1]}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2", "data.label_mapping=prostate_gland",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "sipnet-left-atrium-mr-compact": ("prostate", [  # the compact (CPU-trainable) variant of the above
        "network={init_filters: 8, growth_rate: 4, down_layers: [1, 1, 1], up_layers: [1, 1, 1]}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2", "data.label_mapping=prostate_gland",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "conresnet-pancreas-ct": ("pancreas", [
        "network={base_channels: 8, norm_groups: 4, blocks: [1, 1, 1, 1, 1], dropout: 0.0}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.5, 1.5, 2.0]",
    ]),
    "conresnet-left-atrium-mr": ("prostate", [  # a one-label MR set: the phantom's gland stands in for the atrium
        "network={base_channels: 8, norm_groups: 4, blocks: [1, 1, 1, 1, 1], dropout: 0.0}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2", "data.label_mapping=prostate_gland",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "conresnet-left-atrium-mr-compact": ("prostate", [  # the compact (CPU-trainable) variant of the above
        "network={base_channels: 8, norm_groups: 4, blocks: [1, 1, 1, 1, 1], dropout: 0.0}",
        "sampling.patch_size=[16, 16, 8]", "sampling.batch_size=2", "data.label_mapping=prostate_gland",
        "card_overrides.inference.patch_size=[16, 16, 8]", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "anunet-left-atrium-mr-compact": ("prostate", [  # 2D, slice by slice; the gland stands in for the atrium
        "network={features: [4, 8, 8, 16, 16]}", "sampling.patch_size=[32, 32, 1]", "sampling.batch_size=2",
        "data.label_mapping=prostate_gland", "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "anunet-liver-ct": ("liver", [
        "network={features: [4, 8, 8, 16, 16]}", "sampling.patch_size=[32, 32, 1]", "sampling.batch_size=2",
    ]),
    "raunet-liver-tumour-ct": ("liver", [
        "stages.localizer.network={base_channels: 8, mask_depths: [0, 1]}",
        "stages.liver.network={base_channels: 4, mask_depths: [0, 1]}",
        "stages.tumour.network={base_channels: 4, mask_depths: [0, 1]}",
        "stages.localizer.sampling.patch_size=[32, 32, 1]", "stages.localizer.sampling.batch_size=2",
        "stages.liver.sampling.patch_size=[16, 16, 8]", "stages.liver.sampling.batch_size=2",
        "stages.tumour.sampling.patch_size=[16, 16, 8]", "stages.tumour.sampling.batch_size=2",
        "card_overrides.inference.patch_size=[16, 16, 16]", "card_overrides.preprocessing.target_spacing=[1.5, 1.5, 2.0]",
    ]),
    "raunet-left-atrium-mr-compact": ("prostate", [  # the cascade without a tumour stage; the gland stands in
        "stages.localizer.network={base_channels: 8, mask_depths: [0, 1]}",
        "stages.liver.network={base_channels: 4, mask_depths: [0, 1]}",
        "stages.localizer.sampling.patch_size=[32, 32, 1]", "stages.localizer.sampling.batch_size=2",
        "stages.liver.sampling.patch_size=[16, 16, 8]", "stages.liver.sampling.batch_size=2",
        "stages.liver.sampling.crop_to_label={labels: [1, 2]}", "data.label_mapping=prostate_gland",
        "card_overrides.inference.localizer_size=[32, 32]", "card_overrides.inference.liver_box_size=[16, 16]",
        "card_overrides.inference.liver_patch_size=[16, 16, 8]", "card_overrides.inference.patch_size=[16, 16, 8]",
        "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "rstn-left-atrium-mr-compact": ("prostate", [  # three views; the gland stands in for the atrium
        "network={base_channels: 4, margin: 4}", "sampling.patch_size=[32, 32, 1]", "sampling.batch_size=2",
        "stages.coronal.sampling.patch_size=[32, 16, 1]", "stages.sagittal.sampling.patch_size=[32, 16, 1]",
        "rstn.ground_truth_crop_steps=1", "card_overrides.inference.max_rounds=2", "data.label_mapping=prostate_gland",
        "card_overrides.preprocessing.target_spacing=[1.0, 1.0, 1.5]",
    ]),
    "rstn-pancreas-ct": ("pancreas", [
        "network={base_channels: 4, margin: 4}", "sampling.patch_size=[32, 32, 1]", "sampling.batch_size=2",
        "stages.coronal.sampling.patch_size=[32, 32, 1]", "stages.sagittal.sampling.patch_size=[32, 32, 1]",
        "rstn.ground_truth_crop_steps=1", "card_overrides.inference.max_rounds=2",
    ]),
}


def tiny_overrides(recipe: str, steps: int = 2, extra: list[str] | None = None) -> list[str]:
    return TINY[recipe][1] + COMMON + [f"train.max_steps={steps}", f"train.val_every={steps}",
                                       f"train.checkpoint_every={steps}"] + list(extra or [])


@pytest.fixture(scope="session")
def phantom_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny MSD-layout data set per phantom kind (5 cases of 16 x 32 x 32 voxels)."""
    root = tmp_path_factory.mktemp("phantoms")
    return {kind: synthetic_dataset(root / kind, kind, n_cases=5, shape_zyx=(16, 32, 32), seed=1)
            for kind in ("prostate", "liver", "pancreas")}
