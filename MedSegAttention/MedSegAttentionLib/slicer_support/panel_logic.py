"""The module panel's logic without Qt: preferences, helper processes, runs and heat maps on a scene.

The Slicer module's logic class is this one plus what needs Slicer's GUI (the parameter node,
dependency installs with dialogs). Preferences go through an injected key-value store (the module
passes ``qt.QSettings``; tests pass a dict), the scene is injected too, so pytest runs every method
against the real MRML of slicer-core. Method names follow Slicer's logic convention (camelCase),
because scripts call them on the module's logic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, MutableMapping, Protocol

from ..choices import DEVICE_CHOICES
from ..modelstore.paths import default_store_root
from ..scene import heatmaps
from ..scene.importer import results_in_scene
from ..scene.batch_run import BatchRun
from ..scene.run import RunOptions, RunState, SegmentationRun
from ..scene.sequence_run import SequenceRun, frame_count
from .map_memory import describe_map_memory
from .process_runner import (
    ProcessRunner,
    build_cli_command,
    build_device_query_command,
    build_install_weights_command,
    build_level_speed_command,
)

__all__ = ["DictSettings", "PanelLogic", "Settings"]


class Settings(Protocol):
    """What the logic needs of a settings store (``qt.QSettings`` has these two methods)."""

    def value(self, key: str, default: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...  # noqa: N802 - QSettings' name


class DictSettings:
    """Settings in a dict (tests, scripts without a GUI)."""

    def __init__(self, values: MutableMapping[str, Any] | None = None) -> None:
        self.values = values if values is not None else {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802
        self.values[key] = value


class PanelLogic:
    """Preferences, child processes (device query, level timing, model list, installs) and runs."""

    SETTINGS_KEY = "MedSegAttention"

    def __init__(self, settings: Settings, scene: Any, temporary_path: str | os.PathLike[str] | None = None) -> None:
        self.settings, self.scene, self.temporary_path = settings, scene, temporary_path
        self.sequencesLogic: Any = None  # Slicer's Sequences logic; None inside Slicer (slicer.modules has it)

    # ------------------------------------------------------------------ preferences
    def modelFolderSetting(self) -> str:
        return str(self.settings.value(f"{self.SETTINGS_KEY}/ModelFolder", "") or "")

    def setModelFolderSetting(self, path: str) -> None:
        self.settings.setValue(f"{self.SETTINGS_KEY}/ModelFolder", path or "")

    def preferredDevice(self) -> str:
        device = str(self.settings.value(f"{self.SETTINGS_KEY}/Device", "auto") or "auto")
        return device if device in DEVICE_CHOICES else "auto"

    def setPreferredDevice(self, device: str) -> None:
        self.settings.setValue(f"{self.SETTINGS_KEY}/Device", device if device in DEVICE_CHOICES else "auto")

    def modelFolder(self) -> Path:
        """Where models are installed: the setting, else $MEDSEG_MODEL_DIR, else the CLI's default cache folder."""
        return Path(self.modelFolderSetting()) if self.modelFolderSetting() else default_store_root()

    def cachedLevelTable(self, key: str) -> dict[str, Any] | None:
        """A level table measured before on this computer (settings), or None."""
        text = self.settings.value(f"{self.SETTINGS_KEY}/LevelSpeed/{key}", "")
        return json.loads(text) if text else None

    def storeLevelTable(self, key: str, table: dict[str, Any]) -> None:
        self.settings.setValue(f"{self.SETTINGS_KEY}/LevelSpeed/{key}", json.dumps(table))

    # ------------------------------------------------------------------ child processes
    def _modelDirArgument(self) -> str | None:
        return self.modelFolderSetting() or None

    @staticmethod
    def _started(command: list[str]) -> ProcessRunner:
        runner = ProcessRunner(command, expects_result=False)
        runner.start()
        return runner

    def startDeviceQuery(self) -> ProcessRunner:
        """Ask a child process which GPU torch sees (CUDA stays out of Slicer's process)."""
        return self._started(build_device_query_command())

    def startLevelSpeed(self, modelId: str, device: str) -> ProcessRunner:
        """Measure each pruning level's parameters and time per slice on ``device``, in a child process."""
        return self._started(build_level_speed_command(modelId, device, model_dir=self._modelDirArgument()))

    def startModelList(self) -> ProcessRunner:
        return self._started(build_cli_command("models", "--json", model_dir=self._modelDirArgument()))

    def startInstallWeights(self, modelId: str | None = None, weightsPath: str | None = None, cardPath: str | None = None,
                            url: str | None = None, download: bool = False) -> ProcessRunner:
        """``medseg install-weights`` for a file (with a model id or a card) or a download; checksums are verified."""
        return self._started(build_install_weights_command(modelId, weightsPath, cardPath, url, download,
                                                           model_dir=self._modelDirArgument()))

    # ------------------------------------------------------------------ segmentation
    def startSegmentation(self, inputVolume: Any, modelId: str, device: str = "auto", level: str | None = None,
                          show3D: bool = False, keepFiles: bool = False, tta: bool | None = None,
                          computeMaps: bool = True, outputSegmentation: Any = None) -> SegmentationRun:
        """Start a run (returns at once); poll it until ``run.done``. Nothing enters the scene before success.
        ``computeMaps`` off: only the segmentation is computed and imported (no heat-map volumes).
        ``outputSegmentation``: a segmentation node whose segments the result replaces (None: a new node)."""
        if not inputVolume:
            raise ValueError("Select an input volume.")
        options = self._runOptions(modelId, device, level, show3D, keepFiles, tta, computeMaps,
                                   outputSegmentation.GetID() if outputSegmentation else None)
        run = self._runFactory(options)(inputVolume)
        run.start()
        return run

    def startBatchSegmentation(self, inputVolumes: list[Any], modelId: str, device: str = "auto", level: str | None = None,
                               show3D: bool = False, keepFiles: bool = False, tta: bool | None = None,
                               computeMaps: bool = True) -> BatchRun:
        """Segment several volumes one after another with the same settings (each into a new segmentation);
        returns at once, poll it like one run. A volume that fails is reported and the others go on."""
        volumes = list(dict.fromkeys(v for v in inputVolumes if v))  # each volume once, in the order given
        if not volumes:
            raise ValueError("Select an input volume.")
        options = self._runOptions(modelId, device, level, show3D, keepFiles, tta, computeMaps, None)
        batch = BatchRun(volumes, self._runFactory(options))
        batch.start()
        return batch

    def startSequenceSegmentation(self, inputVolume: Any, modelId: str, device: str = "auto", level: str | None = None,
                                  show3D: bool = False, keepFiles: bool = False, tta: bool | None = None,
                                  computeMaps: bool = True) -> SequenceRun:
        """Segment every frame of the sequence ``inputVolume`` is the proxy of; the results become sequences
        that play along with it (``scene.sequence_run``). Returns at once; poll it like one run."""
        if not inputVolume:
            raise ValueError("Select an input volume.")
        options = self._runOptions(modelId, device, level, show3D, keepFiles, tta, computeMaps, None)
        sequences = SequenceRun(self.scene, inputVolume, self._runFactory(options),
                                update_proxies=self.sequencesLogic.UpdateProxyNodesFromSequences if self.sequencesLogic else None)
        sequences.start()
        return sequences

    def sequenceFrameCount(self, inputVolume: Any) -> int:
        """Frames of the sequence the input volume shows (0 for a volume outside any sequence): the panel
        offers "every frame" only for more than one."""
        return frame_count(self.scene, inputVolume)

    def _runFactory(self, options: RunOptions) -> Callable[[Any], SegmentationRun]:
        """One run of ``options`` per volume (the single run, each volume of a batch, each frame)."""
        return lambda volume: SegmentationRun(self.scene, volume, options, work_root=self.temporary_path)

    def _runOptions(self, modelId: str, device: str, level: str | None, show3D: bool, keepFiles: bool, tta: bool | None,
                    computeMaps: bool, outputSegmentationId: str | None) -> RunOptions:
        if not modelId:
            raise ValueError("Select a model.")
        return RunOptions(model_id=modelId, device=device, level=level, show_3d=show3D, maps="all" if computeMaps else "none",
                          model_dir=self._modelDirArgument(), keep_files=keepFiles, tta=tta,
                          output_segmentation_id=outputSegmentationId)

    @staticmethod
    def applyButtonState(hasInput: bool, model: dict[str, Any] | None, requirementsMet: bool) -> tuple[bool, str, bool]:
        """(enabled, tooltip, installs first) of the Segment button. Before the first run the packages
        (PyTorch and the rest) are missing and no model can be listed: Segment then starts their
        install, which lists the models, instead of staying greyed out."""
        if not hasInput:
            return False, "Select an input volume.", False
        if not requirementsMet:
            return True, ("Installs the Python packages MedSegAttention needs (PyTorch and a few others; once, "
                          "a few minutes), then lists the models to choose from."), True
        if model is None:
            return False, "Select a model.", False
        if not model.get("installed"):
            return False, "Install the model's weights first (see 'Models').", False
        return True, "Run the model on the input volume.", False

    @staticmethod
    def mapMemoryText(inputVolume: Any, model: dict[str, Any] | None, tta: bool, computeMaps: bool) -> str:
        """The line beside "Compute evidence maps": how many maps and their size for this volume."""
        if not computeMaps:
            return "Evidence maps off: only the segmentation is computed." if model else ""
        image = inputVolume.GetImageData() if inputVolume else None
        return describe_map_memory(image.GetDimensions() if image is not None else None, model, tta)

    def process(self, inputVolume: Any, modelId: str, device: str = "auto", level: str | None = None,
                show3D: bool = False, tta: bool | None = None, computeMaps: bool = True, outputSegmentation: Any = None) -> Any:
        """Blocking run for scripts: returns the imported result or raises with the CLI's message."""
        run = self.startSegmentation(inputVolume, modelId, device, level, show3D, tta=tta, computeMaps=computeMaps,
                                     outputSegmentation=outputSegmentation)
        if run.wait() is not RunState.SUCCEEDED:
            raise RuntimeError(run.message)
        self.showMap(run.imported, next(iter(run.imported.map_nodes), ""), 0.5)
        return run.imported

    def showMap(self, result: Any, mapName: str, opacity: float) -> None:
        """Input in the background, the chosen map (or none) in the foreground of every slice view."""
        mapNode = result.map_nodes.get(mapName) if mapName else None
        heatmaps.show_map_in_slice_views(self.scene, mapNode, self.inputVolumeOf(result), opacity)

    def inputVolumeOf(self, result: Any) -> Any:
        """The volume a result was computed from (its segmentation's reference geometry), or None if removed."""
        seg = result.segmentation_node
        return self.scene.GetNodeByID(seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()))

    def latestResult(self) -> Any:
        """The newest result in the scene (a :class:`~..scene.importer.SceneResult`), or None: what the
        panel's map list shows after a scene reload or when the module is entered again."""
        results = results_in_scene(self.scene)
        return results[-1] if results else None

    def evidenceMapNodeIDs(self) -> list[str]:
        """IDs of every evidence-map volume, which the input selector hides (they are not scans)."""
        return [node.GetID() for node in heatmaps.map_nodes_in(self.scene)]

    def setMapOpacity(self, opacity: float) -> None:
        heatmaps.set_map_opacity(self.scene, opacity)

    def setMapThreshold(self, threshold: float) -> None:
        """Evidence-map values below ``threshold`` are transparent."""
        heatmaps.set_map_threshold(self.scene, threshold)
