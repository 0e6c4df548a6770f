"""MedSegAttention: pick a model, click Segment, see the segmentation and the network's own evidence.

Thin Slicer layer. The work happens elsewhere, without Qt:
``MedSegAttentionLib.scene`` (MRML scene changes, result import, the run), ``MedSegAttentionLib.slicer_support.process_runner``
(the ``medseg`` child process). Inference never runs in Slicer's process: the CLI runs in a separate
process, so the GUI stays responsive, a GPU out-of-memory cannot take Slicer down, and Cancel
really stops it.
"""

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedSegAttentionLib.choices import PRUNING_LEVELS
from MedSegAttentionLib.slicer_support import child_reports, dependencies
from MedSegAttentionLib.slicer_support.panel_logic import PanelLogic
from MedSegAttentionLib.slicer_support.process_runner import HelperPool
from MedSegAttentionLib.scene import heatmaps
from MedSegAttentionLib.scene.batch_run import BatchRun
from MedSegAttentionLib.scene.run import RunState
from MedSegAttentionGui import installs, texts
from MedSegAttentionGui.levels_section import LevelsSection
from MedSegAttentionGui.models_section import ModelsSection
from MedSegAttentionGui.results_section import ResultsSection

LEVELS = list(PRUNING_LEVELS)
DEVICES = list(child_reports.DEVICES)


class MedSegAttention(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSegAttention")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSegAttention contributors"]
        self.parent.helpText = texts.helpText()
        self.parent.acknowledgementText = texts.acknowledgementText()


@parameterNodeWrapper
class MedSegAttentionParameterNode:
    """What the user chose; saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode  # None: a new segmentation node per run
    modelId: str = ""
    pruningLevel: Annotated[str, Choice(LEVELS)] = "L4"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    show3D: bool = False
    testTimeMirroring: bool = True
    computeMaps: bool = True
    mapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    mapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = heatmaps.DEFAULT_THRESHOLD
    selectedMap: str = ""


class MedSegAttentionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only: parameters <-> widgets, a timer that polls the run, dialogs."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._helpers = HelperPool()  # device query, level timing, model list and installs
        self._devicePreferenceApplied, self._deviceLabels = False, []
        self._devicesInfo = None  # what the device query found; None until it answered
        self._requirementsMet = False
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSegAttention.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegAttentionLogic()
        self._levels = LevelsSection(self.ui, self.logic, self._startHelper, self._levelState)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._results = ResultsSection(self.ui, self.logic, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, lambda caller, event: self._results.restore())
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self._modelsSection = ModelsSection(
            self.ui, self.logic, self.parent, self._startHelper, self._ensureDependencies, self.onModelChanged,
            lambda: self._parameterNode.modelId if self._parameterNode else "")
        self.ui.defaultDeviceComboBox.currentText = self.logic.preferredDevice()
        self.ui.defaultDeviceComboBox.connect("currentTextChanged(QString)", self.onDefaultDeviceChanged)

        self.initializeParameterNode()
        self._startHelper(self.logic.startDeviceQuery(), self._onDevicesDetected)
        self._requirementsMet = not self.logic.missingRequirements()
        if self._requirementsMet:
            self._modelsSection.onRefreshModels()
        else:
            self.ui.modelInfoLabel.text = _("Required Python packages are not installed yet: "
                                            "click Segment (or Refresh under 'Models') to install them.")

    def onReload(self) -> None:
        """Developer 'Reload': reload the library packages too (importlib, not the removed imp module)."""
        _reloadLibrary()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.kill()
        self._helpers.kill_all()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._results.restore()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:
            self._run.cancel()
        self._results.clear()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if not self._devicePreferenceApplied:
            self._parameterNode.device = self.logic.preferredDevice()
            self._devicePreferenceApplied = True

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._applyComboLabels()  # connecting the GUI refills the device and level combos with bare choices
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.mapMemoryLabel.text = self.logic.mapMemoryText(p.inputVolume, self._selectedModel(), p.testTimeMirroring, p.computeMaps)
        self._updateApplyButton()
        self._levels.update()
        if self._results.result is not None:
            self.logic.setMapOpacity(self._parameterNode.mapOpacity)
            self.logic.setMapThreshold(self._parameterNode.mapThreshold)

    def _selectedModel(self):
        return self._modelsSection.selected()

    def _updateApplyButton(self) -> None:
        if self._run is not None:
            return
        enabled, tip, _installs = self._applyState()
        self.ui.applyButton.enabled, self.ui.applyButton.toolTip = enabled, _(tip)
        self.ui.allFramesCheckBox.enabled = self.logic.sequenceFrameCount(self._parameterNode and self._parameterNode.inputVolume) > 1

    def _applyState(self):
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        return self.logic.applyButtonState(hasInput, self._selectedModel(), self._requirementsMet)

    # ------------------------------------------------------------------ segmentation run
    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.applyButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling...")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if self._applyState()[2]:  # the first run: install, then list the models
                self.ui.statusLabel.text = _("Installing the Python packages MedSegAttention needs...")
                installed = self._ensureDependencies()
                self.ui.statusLabel.text = _(
                    "Packages installed. Pick a model and click Segment." if installed else
                    "The packages were not installed, so no model can run yet. Click Segment to try again.")
                if installed:
                    self._modelsSection.onRefreshModels()
                self._updateApplyButton()
                return
            p = self._parameterNode
            self.ui.logTextEdit.clear()
            level, more = p.pruningLevel if self._usesLevels() else None, list(self.ui.batchVolumesSelector.checkedNodes())
            if self.ui.allFramesCheckBox.enabled and self.ui.allFramesCheckBox.checked:  # results play along with the input
                self._run = self.logic.startSequenceSegmentation(
                    p.inputVolume, p.modelId, p.device, level, p.show3D, keepFiles=self.ui.keepFilesCheckBox.checked,
                    tta=p.testTimeMirroring, computeMaps=p.computeMaps)
            elif more:  # several volumes, same settings, one new segmentation each
                self._run = self.logic.startBatchSegmentation(
                    [p.inputVolume, *more], p.modelId, p.device, level, p.show3D, keepFiles=self.ui.keepFilesCheckBox.checked,
                    tta=p.testTimeMirroring, computeMaps=p.computeMaps)
            else:
                self._run = self.logic.startSegmentation(
                    p.inputVolume, p.modelId, p.device, level, p.show3D, keepFiles=self.ui.keepFilesCheckBox.checked,
                    tta=p.testTimeMirroring, computeMaps=p.computeMaps, outputSegmentation=p.outputSegmentation)
            self._setRunning(True)
            self._timer.start()

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Segment")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.batchVolumesSelector,
                       self.ui.allFramesCheckBox, self.ui.modelComboBox, self.ui.levelComboBox, self.ui.deviceComboBox):
            widget.enabled = not running
        if not running:
            self.ui.levelComboBox.enabled = self._usesLevels()
            self._updateApplyButton()
            self._levels.update()

    def _pollRun(self) -> None:
        for event in self._run.poll():
            if event.kind in ("log", "warning", "error"):
                prefix = "" if event.kind == "log" else f"{event.kind}: "
                self.ui.logTextEdit.appendPlainText(prefix + event.message)
        self.ui.progressBar.value = int(self._run.fraction * 1000)
        self.ui.progressBar.format = f"{self._run.message}  %p%"
        self.ui.statusLabel.text = self._run.message
        if self._run.done:
            run, self._run = self._run, None
            self._setRunning(False)
            self._onRunDone(run)

    def _onRunDone(self, run) -> None:
        warnings = run.warnings
        if run.imported is not None:  # a finished run, or the volumes of a batch segmented before a failure or cancel
            self._results.show(run.imported)
            self.logic.setMapThreshold(self._parameterNode.mapThreshold)
            self._results.restore()  # hides the new maps from the input selectors
        if run.state is RunState.SUCCEEDED:
            hint = _(" Pick an evidence map under Results to overlay it.") if run.imported.map_nodes else ""
            self.ui.statusLabel.text = _("Done.") + hint + ("\n" + "\n".join(warnings) if warnings else "")
        elif run.state is RunState.CANCELLED:  # a batch says how many volumes finished before
            self.ui.statusLabel.text = run.message if isinstance(run, BatchRun) else _("Cancelled; the scene is unchanged.")
        else:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(run.message, detailedText="\n".join([*warnings, *(run.runner.log if run.runner else [])]))

    # ------------------------------------------------------------------ helpers (device query, levels, models)
    def _startHelper(self, runner, onFinished, onUpdate=None) -> None:
        self._helpers.add(runner, onFinished, onUpdate)
        self._timer.start()

    def onTimer(self) -> None:
        if self._run is not None:
            self._pollRun()
        self._helpers.poll()
        if self._run is None and not self._helpers:
            self._timer.stop()

    def _ensureDependencies(self) -> bool:
        self._requirementsMet = self.logic.ensureDependencies()
        return self._requirementsMet

    def _onDevicesDetected(self, runner) -> None:
        self._devicesInfo = runner.other.get("devices") or {}
        summary, self._deviceLabels = child_reports.describe_devices(self._devicesInfo)
        self.ui.deviceInfoLabel.text = summary
        self._applyComboLabels()
        self._levels.update()

    def _applyComboLabels(self) -> None:
        for index, text in enumerate(self._deviceLabels[:self.ui.deviceComboBox.count]):
            self.ui.deviceComboBox.setItemText(index, text)
        self._levels.applyLabels()

    def _usesLevels(self) -> bool:
        return bool(child_reports.model_levels(self._selectedModel()))

    def _levelState(self):
        device = self._parameterNode.device if self._parameterNode else "auto"
        return (self._selectedModel(), device, self._devicesInfo, self.ui.deviceInfoLabel.text, self._run is not None,
                self._requirementsMet)

    def onModelChanged(self, index: int) -> None:
        model = self._selectedModel()
        if model is not None and self._parameterNode:
            self._parameterNode.modelId = model["id"]
            choice = child_reports.model_choice(model)
            self.ui.modelInfoLabel.text = choice.label if choice.enabled else choice.reason
            self.ui.modelComboBox.toolTip = choice.tooltip
        self.ui.levelComboBox.enabled = self._usesLevels()
        self._updateApplyButton()
        self._levels.update()

    def onDefaultDeviceChanged(self, device: str) -> None:
        self.logic.setPreferredDevice(device)
        if self._parameterNode and device in DEVICES:
            self._parameterNode.device = device


class MedSegAttentionLogic(ScriptedLoadableModuleLogic, PanelLogic):
    """Everything the widget asks for, usable from scripts without the GUI. The work is in
    ``MedSegAttentionLib.slicer_support.panel_logic.PanelLogic`` (Qt-free, run by pytest against real MRML);
    this class adds the parameter node and the dependency installs, which need Slicer's dialogs and extensions.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        PanelLogic.__init__(self, qt.QSettings(), slicer.mrmlScene, slicer.app.temporaryPath)

    def getParameterNode(self):
        return MedSegAttentionParameterNode(super().getParameterNode())

    def requirementsPath(self) -> Path:
        return Path(__file__).resolve().parent / "Resources" / "requirements.txt"

    def missingRequirements(self) -> list[str]:
        """torch (with its floor) and the lines of Resources/requirements.txt not installed yet."""
        return dependencies.missing_requirements(self.requirementsPath())

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what is missing after one confirmation: torch through the PyTorch extension, the rest
        from requirements.txt with Slicer's NumPy, SimpleITK and VTK pinned. False if the user declines."""
        return installs.ensureDependencies(self.requirementsPath(), askConfirmation)


class MedSegAttentionTest(ScriptedLoadableModuleTest):
    """Runs the same scene scenarios as the CI tests (Testing/Python/slicer_scenarios.py), in Slicer's scene."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        testing = os.path.join(os.path.dirname(__file__), "Testing", "Python")
        if testing not in sys.path:
            sys.path.insert(0, testing)
        self.setUp()
        self.test_scenarios()
        self.setUp()
        self.test_bundled_model()

    def test_bundled_model(self) -> None:
        """The bundled SIP-Net through the real command line on Slicer's MRHead sample (mechanics, not accuracy)."""
        if MedSegAttentionLogic().missingRequirements():
            return self.delayDisplay("Bundled model test skipped: install the Python packages first (click Segment)")
        import SampleData
        from slicer_bundled_model import run_bundled_model

        volume = SampleData.SampleDataLogic().downloadMRHead()
        run_bundled_model(slicer.mrmlScene, volume, slicer.util.tempDirectory("MedSegAttentionModelTest"))
        self.delayDisplay("Bundled model test passed")

    def test_scenarios(self) -> None:
        import slicer_scenarios

        self.delayDisplay("Running MedSegAttention scene scenarios")
        freshScene = lambda: slicer.mrmlScene.Clear() or slicer.mrmlScene  # noqa: E731
        workdir = Path(slicer.util.tempDirectory("MedSegAttentionTest"))
        names = slicer_scenarios.run_all(freshScene, workdir)
        self.delayDisplay(f"Test passed: {', '.join(names)}")


def _reloadLibrary() -> None:
    """Reload MedSegAttentionLib and MedSegAttentionGui (deepest modules first) for the developer 'Reload' button; uses importlib."""
    names = [name for name in sys.modules if name.split(".")[0] in ("MedSegAttentionLib", "MedSegAttentionGui")]
    for name in sorted(names, key=lambda n: -n.count(".")):
        importlib.reload(sys.modules[name])

