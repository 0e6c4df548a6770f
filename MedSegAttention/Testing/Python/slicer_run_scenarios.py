"""Scene scenarios of whole runs: the CLI as a real child process (a stand-in that answers like
``medseg segment``), one volume or a batch, finished or cancelled. Part of :data:`slicer_scenarios.SCENARIOS`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import SimpleITK as sitk
import slicer

from slicer_fixtures import LABELS, _setup_input, scene_node_ids, write_result_folder

from MedSegAttentionLib.scene import load_volume
from MedSegAttentionLib.scene.batch_run import BatchRun
from MedSegAttentionLib.scene.run import RunOptions, RunState, SegmentationRun
from MedSegAttentionLib.slicer_support.process_runner import python_executable


FAKE_CLI = """
import shutil, sys, time
from MedSegAttentionLib.protocol import emit
input_path, output_dir, prepared, mode = sys.argv[1:5]
import SimpleITK as sitk
size = list(sitk.ReadImage(input_path).GetSize())
emit("progress", fraction=0.2, message="read input of size %s" % size)
if mode == "hang":
    time.sleep(120)
target = output_dir + "/input"
shutil.copytree(prepared, target)
emit("progress", fraction=1.0, message="written")
emit("result", output_dir=target, result=target + "/result.json")
"""


def _fake_cli(prepared: Path, mode: str) -> Callable[[Path, Path], list]:
    """A stand-in *command* (a real child process) that answers like ``medseg segment``."""
    return lambda input_path, output_dir: [python_executable(), "-c", FAKE_CLI, str(input_path), str(output_dir),
                                           str(prepared), mode]


def scenario_run_imports_result(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """A whole run: input written for the child, progress, result imported, scratch folder removed."""
    volume, image, _ = _setup_input(scene, workdir)
    prepared = write_result_folder(workdir / "prepared", image)
    run = SegmentationRun(scene, volume, RunOptions("raunet-liver-ct"), work_root=workdir,
                          command_factory=_fake_cli(prepared, "ok"))
    run.start()
    if run.wait(timeout_s=60) is not RunState.SUCCEEDED:
        raise AssertionError(f"run ended {run.state}: {run.message}\n{run.runner and list(run.runner.log)}")
    if run.imported is None or run.imported.segmentation_node.GetSegmentation().GetNumberOfSegments() != len(LABELS):
        raise AssertionError("the run did not import the segmentation")
    if run.fraction != 1.0 or "test warning" not in run.warnings:
        raise AssertionError(f"progress {run.fraction} / warnings {run.warnings} lost")
    if run.workdir is None or run.workdir.exists():
        raise AssertionError("the scratch folder was not removed")


def scenario_cancelled_run_leaves_scene_unchanged(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Cancel while the child works: no node added, scratch folder removed, state cancelled."""
    volume, image, _ = _setup_input(scene, workdir)
    prepared = write_result_folder(workdir / "prepared", image)
    before = scene_node_ids(scene)
    run = SegmentationRun(scene, volume, RunOptions("raunet-liver-ct"), work_root=workdir,
                          command_factory=_fake_cli(prepared, "hang"), kill_grace_s=1.0)
    run.start()
    import time

    deadline = time.monotonic() + 60
    while run.fraction < 0.2 and time.monotonic() < deadline and not run.done:
        run.poll()
        time.sleep(0.05)
    if run.fraction < 0.2:
        raise AssertionError(f"the child never reported progress: {run.message}")
    run.cancel()
    if run.wait(timeout_s=30) is not RunState.CANCELLED:
        raise AssertionError(f"run ended {run.state}: {run.message}")
    if scene_node_ids(scene) != before:
        raise AssertionError("a cancelled run changed the scene")
    if run.workdir is None or run.workdir.exists():
        raise AssertionError("the scratch folder was not removed after cancel")


def _batch(scene: "slicer.vtkMRMLScene", workdir: Path, volumes: list, mode: str) -> BatchRun:
    prepared = write_result_folder(workdir / f"prepared-{mode}", sitk.ReadImage(str(workdir / "input.nrrd")))
    return BatchRun(volumes, lambda volume: SegmentationRun(scene, volume, RunOptions("raunet-liver-ct"), work_root=workdir,
                                                            command_factory=_fake_cli(prepared, mode), kill_grace_s=1.0))


def scenario_batch_segments_each_volume_and_goes_on_past_a_failure(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Several volumes, one after another: each gets its own segmentation; a volume that cannot run is
    reported by name and the others are still segmented."""
    volume, _, _ = _setup_input(scene, workdir)
    second = load_volume(scene, workdir / "input.nrrd", name="CT abdomen, second series")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no image data")
    batch = _batch(scene, workdir, [volume, empty, second], "ok")
    batch.start()
    if batch.wait(timeout_s=120) is not RunState.FAILED:
        raise AssertionError(f"batch ended {batch.state}: {batch.message}")
    imported = [result.segmentation_node for result in batch.results]
    if len(imported) != 2 or len({node.GetID() for node in imported}) != 2:
        raise AssertionError(f"expected two new segmentations, got {imported}")
    if "no image data" not in batch.message or "other 2 were segmented" not in batch.message:
        raise AssertionError(f"the failure is not reported by name: {batch.message}")
    if batch.fraction != 1.0 or not any(w.startswith("no image data: not segmented") for w in batch.warnings):
        raise AssertionError(f"progress {batch.fraction} / warnings {batch.warnings}")
    if batch.imported is not batch.results[-1]:
        raise AssertionError("the last volume's result is not the one shown")


def scenario_cancelled_batch_starts_no_further_volume(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """Cancel during the first volume: the scene is unchanged and the second volume never starts."""
    volume, _, _ = _setup_input(scene, workdir)
    second = load_volume(scene, workdir / "input.nrrd", name="CT abdomen, second series")
    before = scene_node_ids(scene)
    batch = _batch(scene, workdir, [volume, second], "hang")
    batch.start()
    import time

    deadline = time.monotonic() + 60
    while batch.fraction < 0.1 and time.monotonic() < deadline and not batch.done:
        batch.poll()
        time.sleep(0.05)
    batch.cancel()
    if batch.wait(timeout_s=30) is not RunState.CANCELLED or len(batch.runs) != 1:
        raise AssertionError(f"batch ended {batch.state} after {len(batch.runs)} run(s): {batch.message}")
    if scene_node_ids(scene) != before:
        raise AssertionError("a cancelled batch changed the scene")


RUN_SCENARIOS: dict[str, Callable[["slicer.vtkMRMLScene", Path], None]] = {
    "run_imports_result": scenario_run_imports_result,
    "cancelled_run_leaves_scene_unchanged": scenario_cancelled_run_leaves_scene_unchanged,
    "batch_segments_each_volume_and_goes_on_past_a_failure": scenario_batch_segments_each_volume_and_goes_on_past_a_failure,
    "cancelled_batch_starts_no_further_volume": scenario_cancelled_batch_starts_no_further_volume,
}
