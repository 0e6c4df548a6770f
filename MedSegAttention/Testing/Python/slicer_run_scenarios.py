"""Scene scenarios of whole runs: the CLI as a real child process (a stand-in that answers like
``medseg segment``), one volume or a batch, finished or cancelled. Part of :data:`slicer_scenarios.SCENARIOS`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import SimpleITK as sitk
import slicer

from slicer_fixtures import LABELS, MAPS, _setup_input, scene_node_ids, write_result_folder

from MedSegAttentionLib.scene import heatmaps, load_volume, results_in_scene
from MedSegAttentionLib.scene.batch_run import BatchRun
from MedSegAttentionLib.scene.sequence_run import FRAME_NOT_RUN_ATTRIBUTE, SequenceRun, frame_count
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


def _sequences_logic(scene: "slicer.vtkMRMLScene"):  # noqa: ANN202 - vtkSlicerSequencesLogic
    """Slicer's Sequences logic inside Slicer; outside, one bound to ``scene`` (slicer-core)."""
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences"):
        return modules.sequences.logic()
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic


def _sequence_with_frames(scene: "slicer.vtkMRMLScene", volume: "slicer.vtkMRMLScalarVolumeNode", values: list[str],
                          empty: str) -> tuple["slicer.vtkMRMLSequenceBrowserNode", "slicer.vtkMRMLScalarVolumeNode"]:
    """A time sequence of copies of ``volume`` (the frame at index value ``empty`` without image data),
    a browser for it and its proxy volume, as Slicer makes them when a 4D series is loaded."""
    logic = _sequences_logic(scene)  # registers the sequence node classes with the scene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "CT cine")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for value in values:
        frame = slicer.vtkMRMLScalarVolumeNode()
        if value != empty:
            frame.Copy(volume)
        sequence.SetDataNodeAtValue(frame, value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "CT cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    logic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    proxy.SetName("CT cine")
    return browser, proxy


def scenario_every_frame_of_a_sequence(scene: "slicer.vtkMRMLScene", workdir: Path) -> None:
    """A sequence's frames segmented one after another: the results are sequences synchronised with the
    input's browser (the proxies follow the frame and carry the maps like one run's result), a frame that
    cannot run is reported by its index value, and no temporary node is left."""
    volume, _, _ = _setup_input(scene, workdir)
    browser, proxy = _sequence_with_frames(scene, volume, ["0", "0.5", "1"], empty="0.5")
    if frame_count(scene, proxy) != 3 or frame_count(scene, volume) != 0:
        raise AssertionError("the frames of the sequence are not counted")
    prepared = write_result_folder(workdir / "prepared-seq", sitk.ReadImage(str(workdir / "input.nrrd")))
    logic = _sequences_logic(scene)
    run = SequenceRun(scene, proxy, lambda node: SegmentationRun(scene, node, RunOptions("raunet-liver-ct"), work_root=workdir,
                                                                 command_factory=_fake_cli(prepared, "ok")),
                      update_proxies=logic.UpdateProxyNodesFromSequences)
    run.start()
    if run.wait(timeout_s=120) is not RunState.FAILED or "time 0.5 s" not in run.message or "other 2" not in run.message:
        raise AssertionError(f"sequence ended {run.state}: {run.message}")
    result = run.imported
    segments = browser.GetSequenceNode(result.segmentation_node)
    values = [segments.GetNthIndexValue(i) for i in range(segments.GetNumberOfDataNodes())] if segments else []
    if values != ["0", "0.5", "1"] or [segments.GetDataNodeAtValue(v).GetAttribute(FRAME_NOT_RUN_ATTRIBUTE)
                                        for v in values] != [None, "1", None]:
        raise AssertionError(f"the segmentation sequence holds {values}, not the frames with the one that failed marked")
    if sorted(result.map_nodes) != sorted(name for name, _ in MAPS):
        raise AssertionError(f"map proxies {sorted(result.map_nodes)}")
    for step in (2, 0):  # browse: the proxies follow the frame and keep their display and references
        browser.SetSelectedItemNumber(step)
        logic.UpdateProxyNodesFromSequences(browser)
        if result.segmentation_node.GetSegmentation().GetNumberOfSegments() != len(LABELS):
            raise AssertionError(f"frame {step}: the segmentation proxy has no segments")
        for node in result.map_nodes.values():
            display = node.GetScalarVolumeDisplayNode()
            if display is None or display.GetColorNodeID() != heatmaps.inferno_color_node(scene).GetID():
                raise AssertionError(f"frame {step}: map {node.GetName()} lost its heat-map display")
            if node.GetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE) != result.segmentation_node.GetID():
                raise AssertionError(f"frame {step}: map {node.GetName()} lost its segmentation")
            window = (display.GetWindowLevelMin(), display.GetWindowLevelMax())
            if heatmaps.recorded_value_range(node) != window:  # the threshold's range is the colours' range
                raise AssertionError(f"frame {step}: map {node.GetName()} records {heatmaps.recorded_value_range(node)}, "
                                     f"shows {window}")
    browser.SetSelectedItemNumber(1)  # the frame that did not run: its result is hidden, not the previous one's
    logic.UpdateProxyNodesFromSequences(browser)
    if result.segmentation_node.GetSegmentation().GetNumberOfSegments() != 0 or any(
            node.GetImageData() is not None or node.GetAttribute(heatmaps.MAP_NAME_ATTRIBUTE) != name
            for name, node in result.map_nodes.items()):
        raise AssertionError("the frame that did not run shows another frame's result, or its proxies lost their names")
    found = results_in_scene(scene)[-1]
    if found.segmentation_node is not result.segmentation_node or found.map_nodes.keys() != result.map_nodes.keys():
        raise AssertionError("the panel would not find the sequence's result again")
    leftovers = [n.GetName() for n in _nodes(scene, "vtkMRMLScalarVolumeNode") if "[time" in (n.GetName() or "")]
    if leftovers or len(_nodes(scene, "vtkMRMLSegmentationNode")) != 1:
        raise AssertionError(f"temporary nodes left in the scene: {leftovers}")


def _nodes(scene: "slicer.vtkMRMLScene", class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


RUN_SCENARIOS: dict[str, Callable[["slicer.vtkMRMLScene", Path], None]] = {
    "run_imports_result": scenario_run_imports_result,
    "cancelled_run_leaves_scene_unchanged": scenario_cancelled_run_leaves_scene_unchanged,
    "batch_segments_each_volume_and_goes_on_past_a_failure": scenario_batch_segments_each_volume_and_goes_on_past_a_failure,
    "cancelled_batch_starts_no_further_volume": scenario_cancelled_batch_starts_no_further_volume,
    "every_frame_of_a_sequence": scenario_every_frame_of_a_sequence,
}
