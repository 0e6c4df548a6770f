"""End to end: the real ``medseg segment`` CLI (random-weight tiny model) through the runner into a real scene."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

from model_cards import install_random_model  # noqa: E402
from volumes import phantom_volume  # noqa: E402

from MedSegAttentionLib.scene import ijk_to_ras_array, load_volume  # noqa: E402
from MedSegAttentionLib.scene.run import RunOptions, RunState, SegmentationRun  # noqa: E402
from slicer_scenarios import expected_ijk_to_ras, scene_node_ids  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    store, model_id, _ = install_random_model(root / "store")
    volume, _ = phantom_volume(size_zyx=(8, 24, 20), oblique=True)
    image_path = root / "case.nrrd"
    sitk.WriteImage(volume, str(image_path))
    return store.root, model_id, image_path


def _scene_with_input(image_path: Path):
    scene = slicer.vtkMRMLScene()
    volume = load_volume(scene, image_path, name="MR prostate")
    return scene, volume


def test_real_cli_result_lands_on_the_input_grid(installed, tmp_path: Path) -> None:
    store_root, model_id, image_path = installed
    scene, volume = _scene_with_input(image_path)
    np.testing.assert_allclose(ijk_to_ras_array(volume), expected_ijk_to_ras(sitk.ReadImage(str(image_path))), atol=1e-6)
    run = SegmentationRun(scene, volume, RunOptions(model_id, device="cpu", model_dir=str(store_root)), work_root=tmp_path)
    run.start()
    state = run.wait(timeout_s=240)
    assert state is RunState.SUCCEEDED, f"{run.message}\n" + "\n".join(run.runner.log)
    assert run.fraction == 1.0
    imported = run.imported
    segmentation = imported.segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetSegment(segmentation.GetNthSegmentID(0)).GetName() == "prostate"
    assert sorted(imported.map_nodes) == ["attention_1", "attention_2", "attention_3"]
    for node in imported.map_nodes.values():
        np.testing.assert_allclose(ijk_to_ras_array(node), ijk_to_ras_array(volume), atol=1e-6)
        assert node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    assert not run.workdir.exists()


def test_real_cli_cancel_leaves_scene_unchanged(installed, tmp_path: Path) -> None:
    store_root, model_id, image_path = installed
    scene, volume = _scene_with_input(image_path)
    before = scene_node_ids(scene)
    run = SegmentationRun(scene, volume, RunOptions(model_id, device="cpu", model_dir=str(store_root)),
                          work_root=tmp_path, kill_grace_s=10.0)
    run.start()
    deadline = time.monotonic() + 120
    while run.fraction == 0.0 and not run.done and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.02)
    run.cancel()
    state = run.wait(timeout_s=60)
    if state is RunState.SUCCEEDED:  # the tiny model finished before the cancel arrived
        pytest.skip("the run finished before cancel could be tested")
    assert state is RunState.CANCELLED, run.message
    assert run.runner.exit_code in (130, -15, -9)
    assert scene_node_ids(scene) == before
    assert not run.workdir.exists()
