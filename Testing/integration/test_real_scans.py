"""Every catalog model's pipeline on real scans (random tiny weights): geometry, DICOM, timings.

Accuracy needs trained weights; here the point is that real headers (oblique ProstateX T2, a DICOM
series, LPS NIfTI) flow through preprocessing, the paper pipelines and back onto the input grid.
Skipped with a reason when ../shared/data is absent.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.result_folder import write_result
from MedSegAttentionLib.inference.imageio import read_image
from model_cards import TINY_ANUNET, TINY_RAUNET_2D, TINY_RAUNET_3D, TINY_RSTN, TINY_SIPNET, install_random_model

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

TINY_CONRESNET = {"name": "conresnet", "base_channels": 8, "blocks": [1, 1, 1, 1, 1]}
TINY = {"sipnet": TINY_SIPNET, "conresnet": TINY_CONRESNET, "anunet": TINY_ANUNET, "raunet_2d": TINY_RAUNET_2D,
        "raunet_3d": TINY_RAUNET_3D, "rstn": TINY_RSTN}
CASES = {
    "sipnet-prostate-mr": "ProstateX-0000/t2_tse_tra.nii.gz",
    "conresnet-pancreas-ct": "TotalSegmentatorSamples/example_ct_sm.nii.gz",
    "anunet-liver-ct": "TotalSegmentatorSamples/example_ct_dicom",
    "raunet-liver-tumour-ct": "TotalSegmentatorSamples/example_ct_sm.nii.gz",
    "rstn-pancreas-ct": "TotalSegmentatorSamples/example_ct_sm.nii.gz",
}


def tiny_version(model_id: str) -> dict:
    """The catalog card with its preprocessing and pipeline, but tiny random networks (CPU speed)."""
    card = copy.deepcopy(dict(next(c for c in builtin_cards() if c.id == model_id).data))
    card["id"] = f"tiny-{model_id}"
    for entry in card["networks"].values():
        entry["config"] = {**TINY[entry["config"]["name"]], **{k: v for k, v in entry["config"].items() if k in ("in_channels", "num_classes", "spatial_dims")}}
    inference = card["inference"]
    if "patch_size" in inference:
        inference["patch_size"] = [min(p, 48) for p in inference["patch_size"][:2]] + [16]
    inference["max_rounds"] = min(inference.get("max_rounds", 2), 2)
    if model_id == "conresnet-pancreas-ct":
        card["preprocessing"]["target_spacing"] = [2.0, 2.0, 2.0]
    return card


@pytest.mark.parametrize("model_id", sorted(CASES))
def test_model_pipeline_on_a_real_scan(model_id: str, shared_data, tmp_path) -> None:
    store, tiny_id, _ = install_random_model(tmp_path / "store", tiny_version(model_id))
    image = read_image(shared_data / CASES[model_id])
    result = segment(image, store.card(tiny_id), store, device="cpu")
    out = write_result(result, tmp_path / "out", image=image, montage=True)
    label = sitk.ReadImage(str(out / "segmentation.nrrd"))
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)
    assert result.maps, "every catalog model produces evidence maps"
    assert {"read", "preprocess", "inference", "postprocess", "write"} <= set(result.timings)
    assert all(t >= 0 for t in result.timings.values())
    assert (out / "overlay.png").stat().st_size > 1000


def _physical_corners(image: sitk.Image) -> np.ndarray:
    last = np.array(image.GetSize()) - 1
    corners = [image.TransformContinuousIndexToPhysicalPoint([float(i * last[0]), float(j * last[1]), float(k * last[2])])
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    return np.array(sorted(np.round(corners, 2).tolist()))


def test_dicom_series_covers_the_same_physical_grid_as_its_reference_label(shared_data) -> None:
    """The reference NIfTI stores the rows flipped (direction y = -1): the grids agree in physical space."""
    image = read_image(shared_data / "TotalSegmentatorSamples" / "example_ct_dicom")
    reference = sitk.ReadImage(str(shared_data / "TotalSegmentatorSamples" / "example_seg_dicom.nii.gz"))
    assert image.GetSize() == reference.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(_physical_corners(image), _physical_corners(reference), atol=0.05)
    on_dicom_grid = sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor)
    counts = np.bincount(sitk.GetArrayViewFromImage(reference).ravel())
    np.testing.assert_array_equal(np.bincount(sitk.GetArrayViewFromImage(on_dicom_grid).ravel(), minlength=len(counts)), counts)
    assert sitk.GetArrayViewFromImage(image).min() <= -1000  # Hounsfield units after rescale
