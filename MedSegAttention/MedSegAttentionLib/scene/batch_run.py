"""Several input volumes segmented one after another with the same settings, without Qt.

A :class:`BatchRun` has the surface of one :class:`~.run.SegmentationRun` (start, poll, fraction,
message, done, state, imported, warnings, cancel, kill, wait), so the panel drives either the same way.
Each volume is its own run: its result enters the scene when that run succeeds (all-or-nothing per
volume, as a single run); a volume that fails is reported and the others go on, as ``medseg segment``
does with a folder of scans. Cancel stops the running volume and starts no other; the volumes finished
before it keep their results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import slicer

from ..slicer_support.process_runner import ProcessRunner, RunnerEvent
from .importer import ImportedResult
from .run import RunState, SegmentationRun, wait_until_done

RunFactory = Callable[["slicer.vtkMRMLScalarVolumeNode"], SegmentationRun]


class BatchRun:
    """Drives one :class:`SegmentationRun` per input volume, in order."""

    def __init__(self, volumes: Sequence["slicer.vtkMRMLScalarVolumeNode"], run_factory: RunFactory,
                 noun: str = "volume") -> None:
        if not volumes:
            raise ValueError(f"select at least one input {noun}")
        self.volumes = list(volumes)
        self.run_factory = run_factory
        self.noun = noun  # what the messages call one input: "volume", or "frame" of a sequence
        self.runs: list[SegmentationRun] = []
        self.state = RunState.IDLE
        self.message = ""
        self._cancelled = False

    # ------------------------------------------------------------------ the SegmentationRun surface
    @property
    def done(self) -> bool:
        return self.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)

    @property
    def fraction(self) -> float:
        """Share of the whole batch: finished volumes plus the running one's own progress."""
        if not self.runs:
            return 0.0
        current = self.runs[-1]
        finished = len(self.runs) - (0 if current.done else 1)
        return (finished + (0.0 if current.done else current.fraction)) / len(self.volumes)

    @property
    def runner(self) -> ProcessRunner | None:
        """The current (or last) volume's child process, whose log the panel shows on failure."""
        return self.runs[-1].runner if self.runs else None

    @property
    def imported(self) -> ImportedResult | None:
        """The last volume's imported result that succeeded (the one the panel shows first)."""
        done = [run.imported for run in self.runs if run.state is RunState.SUCCEEDED and run.imported is not None]
        return done[-1] if done else None

    @property
    def results(self) -> list[ImportedResult]:
        """Every imported result, in the order of the volumes."""
        return [run.imported for run in self.runs if run.state is RunState.SUCCEEDED and run.imported is not None]

    @property
    def warnings(self) -> list[str]:
        out: list[str] = []
        for run in self.runs:
            name = run.input_volume.GetName()
            out += [f"{name}: {warning}" for warning in run.warnings]
            if run.state is RunState.FAILED:
                out.append(f"{name}: not segmented: {run.message}")
        return out

    def start(self) -> None:
        """Start the first volume's run; returns at once."""
        if self.state is not RunState.IDLE:
            raise RuntimeError("a run can be started once")
        self.state = RunState.RUNNING
        self._start_next()

    def poll(self) -> list[RunnerEvent]:
        """Events of the running volume (messages prefixed with its name); starts the next when it ends."""
        if self.done or not self.runs:
            return []
        current = self.runs[-1]
        events = current.poll()
        name = current.input_volume.GetName()
        self.message = f"{len(self.runs)}/{len(self.volumes)} {name}: {current.message}"
        if current.done:
            if self._cancelled or current.state is RunState.CANCELLED:
                self._finish(cancelled=True)
            elif len(self.runs) < len(self.volumes):
                self._start_next()
            else:
                self._finish(cancelled=False)
        return [replace(e, message=f"{name}: {e.message}") if e.message else e for e in events]

    def cancel(self) -> None:
        """Stop the running volume; no further volume starts."""
        if self.state is RunState.RUNNING and self.runs:
            self._cancelled = True
            self.state = RunState.CANCELLING
            self.runs[-1].cancel()

    def kill(self) -> None:
        """Stop at once (application shutdown)."""
        if self.runs:
            self.runs[-1].kill()
        if not self.done:
            self._finish(cancelled=True)

    def wait(self, timeout_s: float | None = None) -> RunState:
        """Block until every volume is done (scripts, tests)."""
        return wait_until_done(self, timeout_s)

    # ------------------------------------------------------------------ internals
    def _start_next(self) -> None:
        volume = self.volumes[len(self.runs)]
        run = self.run_factory(volume)
        self.runs.append(run)
        try:
            run.start()
        except Exception as exc:  # noqa: BLE001 - an unusable volume fails alone, the batch goes on
            run.state, run.message = RunState.FAILED, str(exc)
        self.message = f"{len(self.runs)}/{len(self.volumes)} {volume.GetName()}: {run.message}"

    def _finish(self, cancelled: bool) -> None:
        succeeded = sum(run.state is RunState.SUCCEEDED for run in self.runs)
        failed = [run.input_volume.GetName() for run in self.runs if run.state is RunState.FAILED]
        total, noun = len(self.volumes), self.noun
        if cancelled:
            self.state = RunState.CANCELLED
            self.message = (f"Cancelled: {succeeded} of {total} {noun}(s) were segmented before it "
                            f"(their results stay); the {noun} that was running left the scene unchanged.")
        elif failed:
            self.state = RunState.FAILED
            self.message = (f"{len(failed)} of {total} {noun}(s) failed ({', '.join(failed)}); "
                            f"the other {succeeded} were segmented.")
        else:
            self.state = RunState.SUCCEEDED
            self.message = f"Done: {total} {noun}(s) segmented."
