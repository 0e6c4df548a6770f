"""Every frame of a sequence (cine MR, a respiratory-gated CT, a dynamic series) segmented with the same
settings, without Qt; the results become sequences that play along with the input.

The input is a sequence's proxy volume (what Slicer shows for the browser's current frame). Each frame
is run as one :class:`~.run.SegmentationRun` on a temporary volume that shares the frame's voxels and
geometry; its segmentation and maps then move into new sequences (one for the segmentation, one per
map) indexed like the input, and the temporary nodes leave the scene. When the batch ends, the new
sequences join the input's sequence browser, so their proxy nodes show the frame the user browses to;
the proxies carry the attributes and references of a single run's result, so the panel's map list,
threshold and "Edit in Segment Editor" work on them. A frame that fails is reported (its index value)
and the others go on; cancel keeps the frames finished before it. With no frame segmented, nothing
is added.
"""

from __future__ import annotations

from typing import Callable

import slicer
import vtk

from . import heatmaps, hierarchy
from .batch_run import BatchRun
from .importer import SceneResult
from .run import RunState, SegmentationRun
from .transaction import SceneTransaction

FrameRunFactory = Callable[["slicer.vtkMRMLScalarVolumeNode"], SegmentationRun]
ProxyUpdater = Callable[["slicer.vtkMRMLSequenceBrowserNode"], None]
FRAME_NOT_RUN_ATTRIBUTE = "MedSegAttention.FrameNotSegmented"  # on the empty result of a frame that failed
SEGMENTATION_KEY = ""  # key of the segmentation's sequence among the maps' (map names are never empty)


def sequence_of(scene: "slicer.vtkMRMLScene", volume: "slicer.vtkMRMLNode | None") -> (
        "tuple[slicer.vtkMRMLSequenceBrowserNode, slicer.vtkMRMLSequenceNode] | None"):
    """The browser and sequence whose proxy ``volume`` is, or None for a volume outside any sequence."""
    if volume is None or scene is None:
        return None
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for index in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(index)
        sequence = browser.GetSequenceNode(volume)
        if sequence is not None and sequence.GetNumberOfDataNodes() > 0:
            return browser, sequence
    return None


def frame_count(scene: "slicer.vtkMRMLScene", volume: "slicer.vtkMRMLNode | None") -> int:
    """Frames of the sequence ``volume`` is the proxy of (0 for a plain volume)."""
    found = sequence_of(scene, volume)
    return found[1].GetNumberOfDataNodes() if found else 0


def slicer_proxy_updater(browser: "slicer.vtkMRMLSequenceBrowserNode") -> None:
    """Create and fill the browser's proxy nodes with Slicer's Sequences module logic."""
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)


class SequenceRun(BatchRun):
    """One :class:`SegmentationRun` per frame of the sequence behind ``proxy_volume``, in index order."""

    def __init__(self, scene: "slicer.vtkMRMLScene", proxy_volume: "slicer.vtkMRMLScalarVolumeNode",
                 run_factory: FrameRunFactory, update_proxies: ProxyUpdater | None = None) -> None:
        found = sequence_of(scene, proxy_volume)
        if found is None:
            raise ValueError(f"{proxy_volume.GetName() if proxy_volume else 'The input'} is not a frame of a "
                             "sequence; segment it alone, or pick the volume a sequence browser shows")
        self.scene, self.proxy_volume = scene, proxy_volume
        self.browser, self.sequence = found
        frames = [self.sequence.GetNthDataNode(i) for i in range(self.sequence.GetNumberOfDataNodes())]
        super().__init__(frames, self._frame_run, noun="frame")
        self.index_values = [self.sequence.GetNthIndexValue(i) for i in range(len(frames))]
        self._make_run, self._update_proxies = run_factory, update_proxies or slicer_proxy_updater
        self._frame_nodes: dict[int, "slicer.vtkMRMLScalarVolumeNode"] = {}  # run number -> temporary node
        self._collected: set[int] = set()
        self._sequences: dict[str, "slicer.vtkMRMLSequenceNode"] = {}  # SEGMENTATION_KEY or map name
        self._map_titles: dict[str, str] = {}
        self._map_ranges: dict[str, tuple[float, float]] = {}
        self._map_units: dict[str, str | None] = {}
        self._result: SceneResult | None = None

    # ------------------------------------------------------------------ what the panel reads
    @property
    def imported(self) -> SceneResult | None:
        """The result sequences' proxies (segmentation and maps), once the batch ended with a frame done."""
        return self._result

    @property
    def results(self) -> list[SceneResult]:
        return [self._result] if self._result is not None else []

    def poll(self):  # noqa: ANN201 - the runner events of BatchRun.poll
        events = super().poll()
        for number, run in enumerate(self.runs):
            if run.done and number not in self._collected:
                self._collect(number, run)
        if self.done and self._result is None and self._sequences:
            try:
                with SceneTransaction(self.scene):  # the proxies go again if styling them fails
                    self._attach_to_browser()
            except Exception as exc:  # noqa: BLE001 - tell the user; leave no half-made sequence behind
                for sequence in self._sequences.values():
                    self.browser.RemoveSynchronizedSequenceNode(sequence.GetID())
                    self.scene.RemoveNode(sequence)
                self._sequences.clear()
                self.state, self.message = RunState.FAILED, f"Could not show the frames' results: {exc}"
        return events

    def kill(self) -> None:
        super().kill()
        for number in list(self._frame_nodes):
            self._remove_frame_node(number)

    # ------------------------------------------------------------------ internals
    def _frame_name(self, number: int) -> str:
        unit = self.sequence.GetIndexUnit()
        return (f"{self.proxy_volume.GetName()} [{self.sequence.GetIndexName() or 'frame'} "
                f"{self.index_values[number]}{' ' + unit if unit else ''}]")

    def _frame_run(self, frame: "slicer.vtkMRMLScalarVolumeNode") -> SegmentationRun:
        """A run on a temporary volume sharing the frame's voxels and IJK-to-RAS (nothing is copied)."""
        number = len(self.runs)
        node = slicer.vtkMRMLScalarVolumeNode()
        node.SetName(self._frame_name(number))
        node.SetHideFromEditors(True)
        matrix = vtk.vtkMatrix4x4()
        frame.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveImageData(frame.GetImageData())
        self.scene.AddNode(node)
        self._frame_nodes[number] = node
        return self._make_run(node)

    def _remove_frame_node(self, number: int) -> None:
        node = self._frame_nodes.pop(number, None)
        if node is not None and self.scene.GetNodeByID(node.GetID()) is not None:
            self.scene.RemoveNode(node)

    def _collect(self, number: int, run: SegmentationRun) -> None:
        """Move a finished frame's segmentation and maps into the result sequences."""
        self._collected.add(number)
        imported = run.imported if run.state is RunState.SUCCEEDED else None
        if imported is not None:
            value = self.index_values[number]
            self._sequence_for(SEGMENTATION_KEY).SetDataNodeAtValue(imported.segmentation_node, value)
            for name, node in imported.map_nodes.items():
                self._sequence_for(name).SetDataNodeAtValue(node, value)
                self._map_titles[name] = imported.map_titles.get(name, name)
                self._map_units[name] = node.GetAttribute(heatmaps.MAP_UNIT_ATTRIBUTE)
                low, high = heatmaps.recorded_value_range(node)
                old = self._map_ranges.get(name, (low, high))
                self._map_ranges[name] = (min(low, old[0]), max(high, old[1]))
            imported.remove(self.scene)
        self._remove_frame_node(number)

    def _sequence_for(self, key: str) -> "slicer.vtkMRMLSequenceNode":
        if key not in self._sequences:
            what = "segmentation" if key == SEGMENTATION_KEY else key
            sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", self.scene.GenerateUniqueName(
                f"{self.proxy_volume.GetName()} {what} sequence"))
            sequence.SetIndexName(self.sequence.GetIndexName())  # not CopySequenceIndex: it copies the values too
            sequence.SetIndexUnit(self.sequence.GetIndexUnit())
            sequence.SetIndexType(self.sequence.GetIndexType())
            sequence.SetNumericIndexValueTolerance(self.sequence.GetNumericIndexValueTolerance())
            self._sequences[key] = sequence
        return self._sequences[key]

    def _fill_frames_not_run(self) -> None:
        """Give every frame that has no result an empty one (no segment, no voxels) with the attributes of
        the others, so the proxies there show nothing (not the previous frame's result) and stay findable."""
        for sequence in self._sequences.values():
            model = sequence.GetNthDataNode(0)
            for value in self.index_values:
                if sequence.GetDataNodeAtValue(value) is None:
                    empty = model.CreateNodeInstance()
                    for name in model.GetAttributeNames() or ():
                        empty.SetAttribute(name, model.GetAttribute(name))
                    empty.SetAttribute(FRAME_NOT_RUN_ATTRIBUTE, "1")
                    sequence.SetDataNodeAtValue(empty, value)

    def _record_map_ranges(self) -> None:
        """Give every frame of a map the range over all frames, so the proxy's window (set once) and the
        threshold (a fraction of the recorded range, read on whichever frame is shown) agree."""
        for name, value_range in self._map_ranges.items():
            sequence = self._sequences[name]
            for index in range(sequence.GetNumberOfDataNodes()):
                heatmaps.record_value_range(sequence.GetNthDataNode(index), value_range)

    def _attach_to_browser(self) -> None:
        """Synchronise the result sequences with the input's browser and style their proxies like a run's."""
        self._fill_frames_not_run()
        self._record_map_ranges()
        for sequence in self._sequences.values():
            self.browser.AddSynchronizedSequenceNode(sequence)
        self._update_proxies(self.browser)
        segmentation = self.browser.GetProxyNode(self._sequences[SEGMENTATION_KEY])
        if segmentation is None:
            raise RuntimeError("the sequence browser made no proxy node for the segmentation sequence")
        segmentation.SetName(self.scene.GenerateUniqueName(f"{self.proxy_volume.GetName()} segmentation"))
        if segmentation.GetDisplayNode() is None:
            segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.proxy_volume)
        maps = {}
        for name, sequence in self._sequences.items():
            if name == SEGMENTATION_KEY:
                continue
            node = self.browser.GetProxyNode(sequence)
            node.SetName(self.scene.GenerateUniqueName(f"{self.proxy_volume.GetName()} {self._map_titles[name]}"))
            heatmaps.show_as_heatmap(self.scene, node, self._map_titles[name], self._map_ranges[name],
                                     unit=self._map_units.get(name))
            node.SetNodeReferenceID(heatmaps.RESULT_REFERENCE_ROLE, segmentation.GetID())
            maps[name] = node
        for node in (segmentation, *maps.values()):
            node.SetAndObserveTransformNodeID(self.proxy_volume.GetTransformNodeID())
        hierarchy.place_next_to(self.scene, self.proxy_volume, [segmentation, *maps.values()])
        self._result = SceneResult(segmentation_node=segmentation, map_nodes=maps,
                                   map_titles={name: self._map_titles[name] for name in maps})
