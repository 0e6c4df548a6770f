"""Run the ``medseg`` command line as a separate process without blocking the caller.

The caller (the Slicer widget, from a ``QTimer``) calls :meth:`ProcessRunner.poll` now and then and
gets parsed events from the machine-readable lines of docs/result-format.md. Nothing here imports
Qt or Slicer; reader threads only move text lines into a queue.

Cancel stops the whole process tree: the child runs in its own session (POSIX) or process group
(Windows), gets SIGTERM first (the CLI then exits with 130 and writes nothing), and whatever is left
of its group is killed after a grace period.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from ..protocol import ExitStatus, ProtocolEvent, interpret_exit_code, parse_line

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding MedSegAttentionLib (this file: MedSegAttentionLib/slicer_support/)
IS_WINDOWS = sys.platform.startswith("win")


#: the event type the runner yields (kept under its old name for callers)
RunnerEvent = ProtocolEvent


def python_executable() -> str:
    """The Python to run the CLI with: this one, or ``PythonSlicer`` when running inside Slicer."""
    executable = sys.executable or "python"
    if Path(executable).name.lower().startswith("python"):
        return executable
    beside = shutil.which("PythonSlicer", path=str(Path(executable).parent))
    return beside or shutil.which("PythonSlicer") or executable


def cli_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: unbuffered output, and MedSegAttentionLib importable."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: Slicer shares the CPU with the child
    paths = [str(PACKAGE_PARENT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def build_segment_command(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    model_id: str,
    device: str = "auto",
    level: str | None = None,
    maps: str = "all",
    model_dir: str | os.PathLike[str] | None = None,
    python: str | None = None,
    tta: bool | None = None,
    map_storage: str = "percent",
) -> list[str]:
    """``medseg segment`` with machine progress; the result lands in ``output_dir/<case name>``.

    ``tta``: test-time mirroring on (``--tta``, adds the uncertainty map), off (``--no-tta``) or as the card says.
    ``map_storage``: the module loads [0, 1] maps as whole percent in one byte (a quarter of float32).
    """
    command = [python or python_executable(), "-m", "MedSegAttentionLib.cli"]
    if model_dir:
        command += ["--model-dir", str(model_dir)]
    command += [
        "segment", str(input_path), "--model", model_id, "--device", device, "--output-dir", str(output_dir),
        "--maps", maps, "--map-storage", map_storage, "--progress-format", "machine", "--no-montage", "--overwrite",
    ]
    if level:
        command += ["--level", level]
    if tta is not None:
        command.append("--tta" if tta else "--no-tta")
    return command


def build_cli_command(*arguments: str, model_dir: str | os.PathLike[str] | None = None, python: str | None = None) -> list[str]:
    """Any other ``medseg`` sub-command (``models --json``, ``install-weights ...``)."""
    command = [python or python_executable(), "-m", "MedSegAttentionLib.cli"]
    if model_dir:
        command += ["--model-dir", str(model_dir)]
    return command + list(arguments)


def build_install_weights_command(
    model_id: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    card: str | os.PathLike[str] | None = None,
    url: str | None = None,
    download: bool = False,
    model_dir: str | os.PathLike[str] | None = None,
    python: str | None = None,
) -> list[str]:
    """``medseg install-weights`` for a file (with a model id or a card) or a download; it verifies the SHA-256."""
    arguments = ["install-weights"] + ([str(weights)] if weights else [])
    arguments += ["--card", str(card)] if card else []
    arguments += ["--model", model_id] if model_id else []
    arguments += ["--download"] if download else []
    arguments += ["--url", url] if url else []
    return build_cli_command(*arguments, model_dir=model_dir, python=python)


def build_level_speed_command(
    model_id: str, device: str = "auto", model_dir: str | os.PathLike[str] | None = None, python: str | None = None
) -> list[str]:
    """``medseg levels``: measure a prunable model's levels; prints ``medseg-levels`` lines."""
    return build_cli_command("levels", "--model", model_id, "--device", device, model_dir=model_dir, python=python)


def build_device_query_command(python: str | None = None) -> list[str]:
    """``medseg devices --json``: a short child that prints ``medseg-devices {...}`` (torch version, GPUs, MPS),
    keeping CUDA out of the GUI process."""
    return build_cli_command("devices", "--json", python=python)


class ProcessRunner:
    """A child process whose output lines become :class:`RunnerEvent` s, polled without blocking."""

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        kill_grace_s: float = 5.0,
        log_lines: int = 2000,
        expects_result: bool = True,
    ) -> None:
        """``expects_result``: exit 0 without a ``medseg-result`` line is an error (true for ``segment``)."""
        self.command = [str(part) for part in command]
        self.env = cli_environment(env)
        self.cwd = cwd
        self.kill_grace_s = kill_grace_s
        self.expects_result = expects_result
        self.process: subprocess.Popen[str] | None = None
        self.fraction = 0.0
        self.last_message = ""
        self.result_dir: Path | None = None
        self.error_message = ""
        self.warnings: list[str] = []
        self.other: dict[str, dict[str, Any]] = {}  # last payload of other medseg-<kind> lines (e.g. devices)
        self.log: deque[str] = deque(maxlen=log_lines)
        self.exit_code: int | None = None
        self.status: ExitStatus | None = None
        self.cancel_requested = False
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0
        self._exited_at: float | None = None
        self._kill_deadline: float | None = None
        self._group_killed = False

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.process is not None and self.status is None

    @property
    def finished(self) -> bool:
        return self.status is not None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the child and return at once."""
        if self.process is not None:
            raise RuntimeError("this runner was already started")
        kwargs: dict[str, Any] = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own session and process group: cancel reaches grandchildren
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
        )
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            self._open_streams += 1
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream: Any) -> None:
        try:
            for line in stream:
                self._lines.put((name, line))
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put((name, None))

    def cancel(self) -> None:
        """Ask the whole process tree to stop (SIGTERM), then kill what is left after the grace period."""
        if not self.running or self.cancel_requested:
            return
        self.cancel_requested = True
        self._kill_deadline = time.monotonic() + self.kill_grace_s
        if IS_WINDOWS:
            self._kill_tree()  # no SIGTERM for a process group on Windows: taskkill /T ends the tree
        else:
            self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the whole process tree now, without a grace period (e.g. when Slicer closes)."""
        if self.running:
            self.cancel_requested = True
            self._kill_tree()

    def _signal_group(self, sig: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)  # the session leader's pid is the group id
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_tree(self) -> None:
        if self.process is None or self._group_killed:
            return
        self._group_killed = True
        if IS_WINDOWS:
            subprocess.run(["taskkill", "/PID", str(self.process.pid), "/T", "/F"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            self._signal_group(signal.SIGKILL)

    # ------------------------------------------------------------------ events
    def poll(self) -> list[RunnerEvent]:
        """Events since the last call; the last one is ``finished`` once the child is gone."""
        if self.process is None or self.finished:
            return []
        events = self._drain()
        code = self.process.poll()
        now = time.monotonic()
        if self.cancel_requested and self._kill_deadline is not None and (code is not None or now >= self._kill_deadline):
            self._kill_tree()  # the child is gone or out of time: nothing of its group may outlive it
        if code is not None:
            if self._exited_at is None:
                self._exited_at = now
            # All output is read once both pipes closed; a grandchild holding them open gets 2 s.
            if self._open_streams == 0 or now - self._exited_at > 2.0:
                if self._open_streams:
                    self._kill_tree()
                events += self._drain()
                events.append(self._finish(code))
        return events

    def _drain(self) -> list[RunnerEvent]:
        events: list[RunnerEvent] = []
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                return events
            if line is None:
                self._open_streams -= 1
                continue
            event = parse_line(line, stream)
            self._record(event)
            events.append(event)

    def _record(self, event: RunnerEvent) -> None:
        if event.kind == "log":
            self.log.append(event.message if event.stream == "stdout" else f"[stderr] {event.message}")
        elif event.kind == "progress" and event.fraction is not None:
            self.fraction = max(self.fraction, event.fraction)
            self.last_message = event.message
        elif event.kind == "warning":
            self.warnings.append(event.message)
        elif event.kind == "result" and event.data.get("output_dir"):
            self.result_dir = Path(str(event.data["output_dir"]))
        elif event.kind == "error":
            self.error_message = event.message
        else:
            self.other[event.kind] = event.data

    def _finish(self, code: int) -> RunnerEvent:
        self.exit_code = code
        status, meaning = interpret_exit_code(code, self.cancel_requested)
        if status is ExitStatus.SUCCESS and self.expects_result and self.result_dir is None:
            status, meaning = ExitStatus.INTERNAL_ERROR, "The segmentation process reported no result folder."
        self.status = status
        message = meaning if status in (ExitStatus.SUCCESS, ExitStatus.CANCELLED) else (
            f"{meaning}\n{self.error_message}" if self.error_message else f"{meaning}\n{self.stderr_tail()}"
        )
        for stream in (self.process.stdout, self.process.stderr):  # type: ignore[union-attr]
            try:
                stream.close()
            except (OSError, ValueError, AttributeError):
                pass
        return RunnerEvent(kind="finished", message=message.strip(), exit_code=code, status=status)

    def stdout_text(self) -> str:
        """Everything the child printed to stdout that was not a protocol line (e.g. ``models --json``)."""
        return "\n".join(line for line in self.log if not line.startswith("[stderr] "))

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines the child wrote to stderr (for error reports)."""
        tail = [line[len("[stderr] "):] for line in self.log if line.startswith("[stderr] ")]
        return "\n".join(tail[-lines:])

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> list[RunnerEvent]:
        """Poll until finished (for scripts and tests); cancels and raises ``TimeoutError`` past ``timeout_s``."""
        events: list[RunnerEvent] = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.finished:
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline and not self.cancel_requested:
                self.cancel()
                events += self.wait(timeout_s=None)
                raise TimeoutError(f"{self.command[:4]} did not finish within {timeout_s} s")
            time.sleep(interval_s)
        return events


class HelperPool:
    """Short helper processes (device query, model list, installs, level timing) polled from one timer.

    Each helper has a callback for when it finishes and, optionally, one for each batch of new events.
    """

    def __init__(self) -> None:
        self._helpers: list[tuple[ProcessRunner, Callable[[ProcessRunner], None], Callable[[ProcessRunner], None] | None]] = []

    def add(self, runner: ProcessRunner, on_finished: Callable[[ProcessRunner], None],
            on_update: Callable[[ProcessRunner], None] | None = None) -> ProcessRunner:
        """Track a started runner; returns it."""
        self._helpers.append((runner, on_finished, on_update))
        return runner

    def __len__(self) -> int:
        return len(self._helpers)

    def poll(self) -> None:
        """Poll every helper; call ``on_update`` when it printed something and ``on_finished`` when it ended."""
        for helper in list(self._helpers):
            runner, on_finished, on_update = helper
            if runner.poll() and on_update is not None:
                on_update(runner)
            if runner.finished:
                self._helpers.remove(helper)
                on_finished(runner)

    def kill_all(self) -> None:
        """Kill every helper's process tree at once (the module is closing)."""
        for runner, _finished, _update in self._helpers:
            runner.kill()
        self._helpers.clear()
