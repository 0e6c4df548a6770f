"""MedSegAttention: pick a model, click Segment, see the segmentation and the network's own evidence.

Thin Slicer layer. The work happens elsewhere, without Qt:
``MedSegAttentionLib.scene`` (MRML scene changes, result import, the run), ``MedSegAttentionLib.process_runner``
(the ``medseg`` child process). Inference never runs in Slicer's process: the CLI runs in a separate
process, so the GUI stays responsive, a GPU out-of-memory cannot take Slicer down, and Cancel
really stops it.
"""

import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
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

from MedSegAttentionLib.process_runner import (
    ExitStatus,
    ProcessRunner,
    build_cli_command,
    build_device_query_command,
)
from MedSegAttentionLib.scene import heatmaps
from MedSegAttentionLib.scene.run import RunOptions, RunState, SegmentationRun

LEVELS = ["L1", "L2", "L3", "L4"]
DEVICES = ["auto", "cuda", "cpu"]
TORCH_REQUIREMENT = ">=2.2"
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "torch")  # Slicer's own: never replaced by our installs


class MedSegAttention(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSegAttention")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSegAttention contributors"]
        self.parent.helpText = _(
            "Segment CT and MR volumes with published attention networks (SIP-Net, ConResNet, ANU-Net, "
            "RA-UNet, RSTN) and see the evidence they used (attention masks, context residuals, saliency) "
            "as heat maps over the image. Inference runs in a separate process; Cancel stops it."
        )
        self.parent.acknowledgementText = _(
            "The networks follow their original publications; see the model cards for citations and licences."
        )


@parameterNodeWrapper
class MedSegAttentionParameterNode:
    """What the user chose; saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    modelId: str = ""
    pruningLevel: Annotated[str, Choice(LEVELS)] = "L4"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    show3D: bool = False
    mapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
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
        self._result = None
        self._helpers = []  # (ProcessRunner, callback) for device query and model commands
        self._models = []
        self._devicePreferenceApplied = False
        self._deviceLabels = []
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

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.mapComboBox.connect("currentIndexChanged(int)", self.onMapChanged)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.installFromFileButton.connect("clicked(bool)", self.onInstallFromFile)
        self.ui.installFromUrlButton.connect("clicked(bool)", self.onInstallFromUrl)
        self.ui.openModelFolderButton.connect("clicked(bool)", self.onOpenModelFolder)
        self.ui.modelFolderPathLineEdit.currentPath = self.logic.modelFolderSetting()
        self.ui.modelFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelFolderChanged)
        self.ui.defaultDeviceComboBox.currentText = self.logic.preferredDevice()
        self.ui.defaultDeviceComboBox.connect("currentTextChanged(QString)", self.onDefaultDeviceChanged)

        self.initializeParameterNode()
        self._startHelper(self.logic.startDeviceQuery(), self._onDevicesDetected)
        if self.logic.missingRequirements():
            self.ui.modelInfoLabel.text = _(
                "Required Python packages are not installed yet. Open 'Models' and click Refresh to install them."
            )
        else:
            self.onRefreshModels()

    def onReload(self) -> None:
        """Developer 'Reload': reload MedSegAttentionLib too (importlib, not the removed imp module)."""
        _reloadLibrary()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.kill()
        for runner, _callback in self._helpers:
            runner.kill()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:
            self._run.cancel()
        self._result = None
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
            self._applyDeviceLabels()  # connecting the GUI refills the device combo with bare choices
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateApplyButton()
        if self._result is not None:
            self.logic.setMapOpacity(self._parameterNode.mapOpacity)

    def _selectedModel(self):
        index = self.ui.modelComboBox.currentIndex
        return self._models[index] if 0 <= index < len(self._models) else None

    def _updateApplyButton(self) -> None:
        if self._run is not None:
            return
        model = self._selectedModel()
        missing = []
        if not self._parameterNode or not self._parameterNode.inputVolume:
            missing.append(_("select an input volume"))
        if model is None:
            missing.append(_("select a model"))
        elif not model.get("installed"):
            missing.append(_("install the model's weights (see 'Models')"))
        self.ui.applyButton.enabled = not missing
        self.ui.applyButton.toolTip = _("Run the model on the input volume.") if not missing else "; ".join(missing)

    # ------------------------------------------------------------------ segmentation run
    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.applyButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling...")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            p = self._parameterNode
            self.ui.logTextEdit.clear()
            self._run = self.logic.startSegmentation(
                p.inputVolume, p.modelId, p.device, p.pruningLevel if self._usesLevels() else None,
                p.show3D, keepFiles=self.ui.keepFilesCheckBox.checked,
            )
            self._setRunning(True)
            self._timer.start()

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Segment")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputVolumeSelector, self.ui.modelComboBox, self.ui.levelComboBox, self.ui.deviceComboBox):
            widget.enabled = not running
        if not running:
            self.ui.levelComboBox.enabled = self._usesLevels()
            self._updateApplyButton()

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
        if run.state is RunState.SUCCEEDED:
            self._result = run.imported
            self.ui.segmentationShow3DButton.setSegmentationNode(run.imported.segmentation_node)
            self.ui.segmentationShow3DButton.enabled = True
            self._fillMapComboBox()
            self.ui.statusLabel.text = _("Done.") + ("\n" + "\n".join(warnings) if warnings else "")
        elif run.state is RunState.CANCELLED:
            self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")
        else:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(run.message, detailedText="\n".join(run.runner.log) if run.runner else "")

    def _fillMapComboBox(self) -> None:
        wasBlocked = self.ui.mapComboBox.blockSignals(True)
        self.ui.mapComboBox.clear()
        self.ui.mapComboBox.addItem(_("None"), "")
        for info in self._result.description.maps:
            self.ui.mapComboBox.addItem(info.title, info.name)
        self.ui.mapComboBox.blockSignals(wasBlocked)
        self.ui.mapComboBox.currentIndex = 1 if self._result.description.maps else 0
        self.onMapChanged(self.ui.mapComboBox.currentIndex)

    def onMapChanged(self, index: int) -> None:
        if self._result is None or not self._parameterNode:
            return
        name = self.ui.mapComboBox.itemData(index) or ""
        self._parameterNode.selectedMap = name
        self.logic.showMap(self._result, name, self._parameterNode.mapOpacity)

    # ------------------------------------------------------------------ helpers (device query, models)
    def _startHelper(self, runner, callback) -> None:
        self._helpers.append((runner, callback))
        self._timer.start()

    def onTimer(self) -> None:
        if self._run is not None:
            self._pollRun()
        for runner, callback in list(self._helpers):
            runner.poll()
            if runner.finished:
                self._helpers.remove((runner, callback))
                callback(runner)
        if self._run is None and not self._helpers:
            self._timer.stop()

    def _onDevicesDetected(self, runner) -> None:
        summary, self._deviceLabels = self.logic.describeDevices(runner.other.get("devices"))
        self.ui.deviceInfoLabel.text = summary
        self._applyDeviceLabels()

    def _applyDeviceLabels(self) -> None:
        for index, text in enumerate(self._deviceLabels):
            self.ui.deviceComboBox.setItemText(index, text)

    def _usesLevels(self) -> bool:
        model = self._selectedModel()
        return bool(model and model.get("id", "").startswith("anunet"))

    def onModelChanged(self, index: int) -> None:
        model = self._selectedModel()
        if model is not None and self._parameterNode:
            self._parameterNode.modelId = model["id"]
            self.ui.modelInfoLabel.text = model.get("title", "") if model.get("installed") else model.get("how_to_install", "")
        self.ui.levelComboBox.enabled = self._usesLevels()
        self._updateApplyButton()

    def onRefreshModels(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to list the models."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.ui.modelInfoLabel.text = _("Reading the model catalog...")
            self._startHelper(self.logic.startModelList(), self._onModelsListed)

    def _onModelsListed(self, runner) -> None:
        if runner.status is not ExitStatus.SUCCESS:
            self.ui.modelInfoLabel.text = _("Could not list the models: ") + runner.error_message
            return
        self._models = self.logic.parseModelList(runner.stdout_text())
        wanted = self._parameterNode.modelId if self._parameterNode else ""
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.ui.modelsListWidget.clear()
        for model in self._models:
            state = "" if model.get("installed") else _(" (not installed)")
            self.ui.modelComboBox.addItem(model.get("title", model["id"]) + state, model["id"])
            self.ui.modelsListWidget.addItem(f"{model['id']}: {model.get('title', '')}{state}")
        ids = [m["id"] for m in self._models]
        self.ui.modelComboBox.currentIndex = ids.index(wanted) if wanted in ids else (0 if ids else -1)
        self.ui.modelComboBox.blockSignals(wasBlocked)
        self.onModelChanged(self.ui.modelComboBox.currentIndex)

    def onInstallFromFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Weights (.safetensors) or model card (.json)"), "",
            _("Weights or model card (*.safetensors *.json)"),
        )
        if not path:
            return
        if path.lower().endswith(".json"):
            weights = qt.QFileDialog.getOpenFileName(self.parent, _("Weights for this card"), os.path.dirname(path),
                                                     _("Weights (*.safetensors)"))
            if not weights:
                return
            runner = self.logic.startInstallWeights(weightsPath=weights, cardPath=path)
        else:
            model = self._selectedModel()
            if model is None:
                slicer.util.errorDisplay(_("Select the model these weights belong to first."))
                return
            runner = self.logic.startInstallWeights(modelId=model["id"], weightsPath=path)
        self.ui.modelInfoLabel.text = _("Installing and verifying weights...")
        self._startHelper(runner, self._onInstalled)

    def onInstallFromUrl(self) -> None:
        model = self._selectedModel()
        if model is None:
            slicer.util.errorDisplay(_("Select the model to download first."))
            return
        url = self.ui.weightsUrlLineEdit.text.strip() or None
        self.ui.modelInfoLabel.text = _("Downloading and verifying weights...")
        self._startHelper(self.logic.startInstallWeights(modelId=model["id"], url=url, download=True), self._onInstalled)

    def _onInstalled(self, runner) -> None:
        if runner.status is not ExitStatus.SUCCESS:
            slicer.util.errorDisplay(_("Installing the weights failed: ") + (runner.error_message or runner.stderr_tail()))
        self.onRefreshModels()

    def onOpenModelFolder(self) -> None:
        folder = self.logic.modelFolder()
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def onModelFolderChanged(self, path: str) -> None:
        self.logic.setModelFolderSetting(path)

    def onDefaultDeviceChanged(self, device: str) -> None:
        self.logic.setPreferredDevice(device)
        if self._parameterNode and device in DEVICES:
            self._parameterNode.device = device


class MedSegAttentionLogic(ScriptedLoadableModuleLogic):
    """Everything the widget asks for, usable from scripts without the GUI.

    Scene work is delegated to ``MedSegAttentionLib.scene``; processes to ``MedSegAttentionLib.process_runner``.
    """

    SETTINGS_KEY = "MedSegAttention"

    def getParameterNode(self):
        return MedSegAttentionParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ preferences
    def modelFolderSetting(self) -> str:
        return str(qt.QSettings().value(f"{self.SETTINGS_KEY}/ModelFolder", "") or "")

    def setModelFolderSetting(self, path: str) -> None:
        qt.QSettings().setValue(f"{self.SETTINGS_KEY}/ModelFolder", path or "")

    def preferredDevice(self) -> str:
        device = str(qt.QSettings().value(f"{self.SETTINGS_KEY}/Device", "auto") or "auto")
        return device if device in DEVICES else "auto"

    def setPreferredDevice(self, device: str) -> None:
        qt.QSettings().setValue(f"{self.SETTINGS_KEY}/Device", device if device in DEVICES else "auto")

    def modelFolder(self) -> Path:
        """Where models are installed: the setting, else $MEDSEG_MODEL_DIR, else the CLI's default cache folder."""
        if self.modelFolderSetting():
            return Path(self.modelFolderSetting())
        from MedSegAttentionLib.paths import default_store_root

        return default_store_root()

    # ------------------------------------------------------------------ dependencies
    def requirementsPath(self) -> Path:
        return Path(__file__).resolve().parent / "Resources" / "requirements.txt"

    def missingRequirements(self) -> list[str]:
        """Requirements (torch and Resources/requirements.txt) not installed at a fitting version."""
        from importlib import metadata

        lines = [f"torch{TORCH_REQUIREMENT}"] + [
            line.split("#")[0].strip() for line in self.requirementsPath().read_text().splitlines()
        ]
        missing = []
        for line in filter(None, lines):
            try:
                from packaging.requirements import Requirement

                requirement = Requirement(line)
                name, specifier = requirement.name, requirement.specifier
            except ImportError:
                name, specifier = line.split(">")[0].split("=")[0].split("<")[0].strip(), None
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                missing.append(line)
                continue
            if specifier is not None and not specifier.contains(version, prereleases=True):
                missing.append(line)
        return missing

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what is missing: torch through the PyTorch extension, the rest from requirements.txt (one confirmation)."""
        missing = self.missingRequirements()
        if not missing:
            return True
        if any(line.startswith("torch") for line in missing):
            try:
                import PyTorchUtils
            except ModuleNotFoundError as exc:
                raise RuntimeError(_("MedSegAttention needs the PyTorch extension: install it from the Extensions Manager.")) from exc
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                return False
        others = [line for line in self.missingRequirements() if not line.startswith("torch")]
        if not others:
            return True
        constraints = self._protectedConstraintsFile()
        pydeps = self._packagingModule()
        if pydeps is not None:  # Slicer >= 5.12: prompts once, shows progress, skips in testing mode
            import inspect

            extra = {"constraints": constraints} if "constraints" in inspect.signature(pydeps.pip_ensure).parameters else {}
            pydeps.pip_ensure(pydeps.load_requirements(str(self.requirementsPath())), requester="MedSegAttention", **extra)
        else:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("MedSegAttention needs to install Python packages. This takes a few minutes."),
                detailedText="\n".join(others),
            ):
                return False
            with slicer.util.WaitCursor():
                slicer.util.pip_install(others + ["-c", constraints])
        return not self.missingRequirements()

    @staticmethod
    def _packagingModule():
        for name in ("slicer.packaging", "slicer.pydeps"):
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        return None

    @staticmethod
    def _protectedConstraintsFile() -> str:
        """A pip constraints file pinning Slicer's own NumPy, SimpleITK, VTK and torch to what is installed."""
        from importlib import metadata

        pins = []
        for name in PROTECTED_PACKAGES:
            try:
                pins.append(f"{name}=={metadata.version(name)}")
            except metadata.PackageNotFoundError:
                continue
        handle, path = tempfile.mkstemp(prefix="MedSegAttention-constraints-", suffix=".txt")
        with os.fdopen(handle, "w") as stream:
            stream.write("\n".join(pins) + "\n")
        return path

    # ------------------------------------------------------------------ child processes
    def _modelDirArgument(self):
        return self.modelFolderSetting() or None

    def startDeviceQuery(self) -> ProcessRunner:
        """Ask a child process which GPU torch sees (CUDA stays out of Slicer's process)."""
        runner = ProcessRunner(build_device_query_command(), expects_result=False)
        runner.start()
        return runner

    @staticmethod
    def describeDevices(info) -> tuple[str, list[str]]:
        """A summary line and the device combo texts (same order as DEVICES) from ``medseg-devices``."""
        if not info or not info.get("torch"):
            return _("PyTorch is not installed yet; it is installed on first use."), list(DEVICES)
        gpus = info.get("cuda") or []
        if gpus:
            gpu = f"{gpus[0]['name']}, {gpus[0]['memory_gib']} GiB"
            return (_("PyTorch {version}; GPU: {gpu}").format(version=info["torch"], gpu=gpu),
                    [f"auto ({gpu})", f"cuda ({gpu})", "cpu"])
        return (_("PyTorch {version}; no CUDA GPU found, the CPU will be used.").format(version=info["torch"]),
                ["auto (CPU)", "cuda (not available)", "cpu"])

    def startModelList(self) -> ProcessRunner:
        runner = ProcessRunner(build_cli_command("models", "--json", model_dir=self._modelDirArgument()),
                               expects_result=False)
        runner.start()
        return runner

    @staticmethod
    def parseModelList(text: str) -> list[dict]:
        """The entries of ``medseg models --json``."""
        start = text.find("[")
        entries = json.loads(text[start:]) if start >= 0 else []
        return [entry for entry in entries if isinstance(entry, dict) and entry.get("id")]

    def startInstallWeights(self, modelId=None, weightsPath=None, cardPath=None, url=None, download=False) -> ProcessRunner:
        """``medseg install-weights`` for a file (with a model id or a card) or a download; checksums are verified."""
        arguments = ["install-weights"]
        if weightsPath:
            arguments.append(str(weightsPath))
        if cardPath:
            arguments += ["--card", str(cardPath)]
        if modelId:
            arguments += ["--model", modelId]
        if download:
            arguments.append("--download")
        if url:
            arguments += ["--url", url]
        runner = ProcessRunner(build_cli_command(*arguments, model_dir=self._modelDirArgument()), expects_result=False)
        runner.start()
        return runner

    # ------------------------------------------------------------------ segmentation
    def startSegmentation(self, inputVolume, modelId: str, device: str = "auto", level=None, show3D: bool = False,
                          keepFiles: bool = False) -> SegmentationRun:
        """Start a run (returns at once); poll it until ``run.done``. Nothing enters the scene before success."""
        if not inputVolume:
            raise ValueError(_("Select an input volume."))
        if not modelId:
            raise ValueError(_("Select a model."))
        options = RunOptions(model_id=modelId, device=device, level=level, show_3d=show3D,
                             model_dir=self._modelDirArgument(), keep_files=keepFiles)
        run = SegmentationRun(slicer.mrmlScene, inputVolume, options, work_root=slicer.app.temporaryPath)
        run.start()
        return run

    def process(self, inputVolume, modelId: str, device: str = "auto", level=None, show3D: bool = False):
        """Blocking run for scripts: returns the imported result or raises with the CLI's message."""
        run = self.startSegmentation(inputVolume, modelId, device, level, show3D)
        if run.wait() is not RunState.SUCCEEDED:
            raise RuntimeError(run.message)
        self.showMap(run.imported, next(iter(run.imported.map_nodes), ""), 0.5)
        return run.imported

    def showMap(self, result, mapName: str, opacity: float) -> None:
        """Input in the background, the chosen map (or none) in the foreground of every slice view."""
        mapNode = result.map_nodes.get(mapName) if mapName else None
        inputNode = slicer.mrmlScene.GetNodeByID(result.segmentation_node.GetNodeReferenceID(
            result.segmentation_node.GetReferenceImageGeometryReferenceRole()))
        heatmaps.show_map_in_slice_views(slicer.mrmlScene, mapNode, inputNode, opacity)
        if mapNode is not None:
            try:
                slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(mapNode)
            except AttributeError:
                logging.debug("no colour legend support in this Slicer")

    def setMapOpacity(self, opacity: float) -> None:
        heatmaps.set_map_opacity(slicer.mrmlScene, opacity)


class MedSegAttentionTest(ScriptedLoadableModuleTest):
    """Runs the same scene scenarios as the CI tests (MedSegAttentionLib.slicer_scenarios), in Slicer's scene."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_scenarios()

    def test_scenarios(self) -> None:
        from MedSegAttentionLib import slicer_scenarios

        self.delayDisplay("Running MedSegAttention scene scenarios")

        def freshScene():
            slicer.mrmlScene.Clear()
            return slicer.mrmlScene

        workdir = Path(slicer.util.tempDirectory("MedSegAttentionTest"))
        names = slicer_scenarios.run_all(freshScene, workdir)
        self.delayDisplay(f"Test passed: {', '.join(names)}")


def _reloadLibrary() -> None:
    """Reload MedSegAttentionLib (deepest modules first) for the developer 'Reload' button; uses importlib."""
    names = [name for name in sys.modules if name == "MedSegAttentionLib" or name.startswith("MedSegAttentionLib.")]
    for name in sorted(names, key=lambda n: -n.count(".")):
        importlib.reload(sys.modules[name])

