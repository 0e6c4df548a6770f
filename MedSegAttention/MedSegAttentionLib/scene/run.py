"""One segmentation run, start to finish, without Qt: write the input, run the CLI, import the result.

The widget creates a :class:`SegmentationRun`, calls :meth:`~SegmentationRun.start`, then
:meth:`~SegmentationRun.poll` from a timer until :attr:`~SegmentationRun.done`. Nothing is added to
the scene until the CLI has finished successfully, and the import is all-or-nothing, so a cancelled
or failed run leaves the scene as it was. The scratch folder is removed at the end unless kept for
debugging.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import slicer

from ..slicer_support.process_runner import ExitStatus, ProcessRunner, RunnerEvent, build_segment_command
from .importer import ImportedResult, import_result
from .volumes import write_volume

if TYPE_CHECKING:
    from .batch_run import BatchRun

CommandFactory = Callable[[Path, Path], list]


class RunState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class RunOptions:
    """What the user chose."""

    model_id: str
    device: str = "auto"
    level: str | None = None
    maps: str = "all"
    show_3d: bool = False
    model_dir: str | None = None
    keep_files: bool = False
    tta: bool | None = None  # test-time mirroring (None: as the model card says)
    output_segmentation_id: str | None = None  # a segmentation node to overwrite (None: a new node)


class SegmentationRun:
    """Drives one ``medseg segment`` run for one input volume node."""

    def __init__(
        self,
        scene: "slicer.vtkMRMLScene",
        input_volume: "slicer.vtkMRMLScalarVolumeNode",
        options: RunOptions,
        work_root: str | os.PathLike[str] | None = None,
        command_factory: CommandFactory | None = None,
        kill_grace_s: float = 5.0,
    ) -> None:
        self.scene = scene
        self.input_volume = input_volume
        self.options = options
        self.work_root = work_root
        self.command_factory = command_factory or self._default_command
        self.kill_grace_s = kill_grace_s
        self.state = RunState.IDLE
        self.workdir: Path | None = None
        self.runner: ProcessRunner | None = None
        self.imported: ImportedResult | None = None
        self.message = ""

    def _default_command(self, input_path: Path, output_dir: Path) -> list:
        o = self.options
        return build_segment_command(input_path, output_dir, o.model_id, device=o.device, level=o.level,
                                     maps=o.maps, model_dir=o.model_dir, tta=o.tta)

    @property
    def done(self) -> bool:
        return self.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)

    @property
    def fraction(self) -> float:
        return self.runner.fraction if self.runner else 0.0

    def start(self) -> None:
        """Write the input to a scratch NRRD and start the CLI; returns at once."""
        if self.state is not RunState.IDLE:
            raise RuntimeError("a run can be started once")
        if self.input_volume is None or self.input_volume.GetImageData() is None:
            raise ValueError("select an input volume with image data")
        self.workdir = Path(tempfile.mkdtemp(prefix="MedSegAttention-", dir=self.work_root))
        try:
            input_path = write_volume(self.input_volume, self.workdir / "input.nrrd")
            self.runner = ProcessRunner(self.command_factory(input_path, self.workdir / "output"),
                                        kill_grace_s=self.kill_grace_s)
            self.runner.start()
        except Exception:
            self.cleanup()
            raise
        self.state = RunState.RUNNING
        self.message = "Starting"

    def poll(self) -> list[RunnerEvent]:
        """Events since the last call; on the CLI's success the result is imported before returning."""
        if self.runner is None or self.done:
            return []
        events = self.runner.poll()
        for event in events:
            if event.kind == "progress":
                self.message = event.message
            elif event.kind == "finished":
                self._on_finished(event)
        return events

    def _on_finished(self, event: RunnerEvent) -> None:
        if event.status is ExitStatus.SUCCESS:
            try:
                target_id = self.options.output_segmentation_id
                target = self.scene.GetNodeByID(target_id) if target_id else None
                self.imported = import_result(self.scene, self.runner.result_dir, self.input_volume,
                                              show_3d=self.options.show_3d, output_segmentation=target)
                if target_id and target is None:
                    self.imported.warnings.append("the segmentation chosen as output was removed during the run; "
                                                  "the result is in a new segmentation")
                self.state, self.message = RunState.SUCCEEDED, "Done"
            except Exception as exc:  # noqa: BLE001 - the import rolled back; tell the user why
                self.state, self.message = RunState.FAILED, f"Could not show the result: {exc}"
        elif event.status is ExitStatus.CANCELLED:
            self.state, self.message = RunState.CANCELLED, event.message
        else:
            self.state, self.message = RunState.FAILED, event.message
        self.cleanup()

    def cancel(self) -> None:
        """Stop the CLI (whole process tree); the next polls report ``cancelled``."""
        if self.state is RunState.RUNNING and self.runner is not None:
            self.state = RunState.CANCELLING
            self.message = "Cancelling"
            self.runner.cancel()

    def kill(self) -> None:
        """Stop at once (application shutdown): kill the process tree and remove the scratch folder."""
        if self.runner is not None and not self.done:
            self.runner.kill()
            self.state, self.message = RunState.CANCELLED, "Cancelled"
        self.cleanup()

    def wait(self, timeout_s: float | None = None) -> RunState:
        """Block until done (scripts, tests, the self-test)."""
        return wait_until_done(self, timeout_s)

    @property
    def warnings(self) -> list[str]:
        runner_warnings = self.runner.warnings if self.runner else []
        imported = self.imported.warnings if self.imported else []
        return list(dict.fromkeys([*runner_warnings, *imported]))

    def cleanup(self) -> None:
        """Remove the scratch folder (kept when ``options.keep_files``)."""
        if self.workdir is not None and not self.options.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_until_done(run: "SegmentationRun | BatchRun", timeout_s: float | None = None) -> RunState:
    """Poll ``run`` until it is done; past ``timeout_s`` cancel it (once) and keep polling until it stops."""
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not run.done:
        run.poll()
        if deadline is not None and time.monotonic() > deadline:
            run.cancel()
            deadline = None
        time.sleep(0.05)
    return run.state
