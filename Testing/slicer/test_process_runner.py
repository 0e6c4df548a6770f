"""The process runner against real child processes (small python -c scripts speaking the protocol)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from MedSegAttentionLib.slicer_support.process_runner import (
    ExitStatus,
    ProcessRunner,
    build_segment_command,
    interpret_exit_code,
    parse_line,
)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_parse_line() -> None:
    event = parse_line('medseg-progress {"fraction": 0.42, "message": "sliding window 12/28"}\n')
    assert (event.kind, event.fraction, event.message) == ("progress", 0.42, "sliding window 12/28")
    assert parse_line('medseg-progress {"fraction": 7}').fraction == 1.0
    assert parse_line('medseg-error {"message": "2-D input", "code": 2}').data["code"] == 2
    assert parse_line("medseg-progress {not json").kind == "log"
    assert parse_line("hello").kind == "log"
    assert parse_line('medseg-progress {"fraction": 0.5}', stream="stderr").kind == "log"


def test_exit_codes() -> None:
    assert interpret_exit_code(0)[0] is ExitStatus.SUCCESS
    assert interpret_exit_code(1)[0] is ExitStatus.INTERNAL_ERROR
    assert interpret_exit_code(2)[0] is ExitStatus.BAD_INPUT
    assert interpret_exit_code(3)[0] is ExitStatus.MODEL_PROBLEM
    assert interpret_exit_code(4)[0] is ExitStatus.OUT_OF_MEMORY
    assert interpret_exit_code(130)[0] is ExitStatus.CANCELLED
    assert interpret_exit_code(-9)[0] is ExitStatus.CRASHED and "SIGKILL" in interpret_exit_code(-9)[1]
    assert interpret_exit_code(-15, cancel_requested=True)[0] is ExitStatus.CANCELLED
    assert interpret_exit_code(77)[0] is ExitStatus.CRASHED


def test_progress_warning_result_then_success(tmp_path: Path) -> None:
    runner = ProcessRunner(script(f"""
        import json, sys, time
        def say(kind, **p): print("medseg-" + kind, json.dumps(p), flush=True)
        say("progress", fraction=0.1, message="reading")
        print("some other line")
        print("medseg-progress {{broken", flush=True)
        print("a traceback-ish line", file=sys.stderr, flush=True)
        say("warning", message="GPU out of memory; retrying with 2 windows per batch")
        time.sleep(0.2)
        say("progress", fraction=0.9, message="writing")
        say("result", output_dir={str(tmp_path)!r}, result={str(tmp_path / 'result.json')!r})
    """))
    started = time.monotonic()
    runner.start()
    assert time.monotonic() - started < 1.0  # start() does not wait for the child
    events = runner.wait(timeout_s=30)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "finished" and kinds.count("finished") == 1
    assert [e.fraction for e in events if e.kind == "progress"] == [0.1, 0.9]
    assert kinds.count("warning") == 1 and kinds.count("result") == 1
    assert events[-1].status is ExitStatus.SUCCESS and runner.exit_code == 0
    assert runner.result_dir == tmp_path and runner.fraction == 0.9 and runner.last_message == "writing"
    assert "some other line" in runner.log and "medseg-progress {broken" in runner.log
    assert "a traceback-ish line" in runner.stderr_tail()
    assert runner.poll() == []  # nothing after finished


def test_error_line_and_exit_code_become_the_message() -> None:
    runner = ProcessRunner(script("""
        import sys
        print('medseg-error {"message": "weights for sipnet are not installed", "code": 3}', flush=True)
        sys.exit(3)
    """))
    runner.start()
    finished = runner.wait(timeout_s=30)[-1]
    assert finished.status is ExitStatus.MODEL_PROBLEM and finished.exit_code == 3
    assert "weights for sipnet are not installed" in finished.message


def test_success_without_result_line_is_an_error() -> None:
    runner = ProcessRunner(script("print('done')"))
    runner.start()
    assert runner.wait(timeout_s=30)[-1].status is ExitStatus.INTERNAL_ERROR


def test_crash_reports_stderr() -> None:
    runner = ProcessRunner(script("import sys; sys.stderr.write('fatal: something broke\\n'); sys.exit(5)"))
    runner.start()
    finished = runner.wait(timeout_s=30)[-1]
    assert finished.status is ExitStatus.CRASHED and "something broke" in finished.message


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody reaped yet is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


FAMILY = """
    import json, signal, subprocess, sys, time
    {handler}
    grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    open({pid_file!r}, "w").write(json.dumps([grandchild.pid]))
    print('medseg-progress {{"fraction": 0.3, "message": "sliding window 1/9"}}', flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
@pytest.mark.parametrize(
    "handler",
    [
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))",  # like the CLI: clean exit 130
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",  # deaf child: needs the kill after the grace period
    ],
    ids=["cooperative", "ignores-sigterm"],
)
def test_cancel_kills_child_and_grandchild(tmp_path: Path, handler: str) -> None:
    pid_file = tmp_path / "pids.json"
    runner = ProcessRunner(script(FAMILY.format(handler=handler, pid_file=str(pid_file))), kill_grace_s=0.5)
    runner.start()
    deadline = time.monotonic() + 30
    while runner.fraction < 0.3 and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    assert runner.fraction == 0.3 and pid_file.exists()
    grandchild = int(pid_file.read_text().strip("[]"))
    child = runner.process.pid
    started = time.monotonic()
    runner.cancel()
    finished = runner.wait(timeout_s=30)[-1]
    assert time.monotonic() - started < 10
    assert finished.status is ExitStatus.CANCELLED
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(child) and not _alive(grandchild)


def test_segment_command_follows_the_cli(tmp_path: Path) -> None:
    command = build_segment_command(tmp_path / "in.nrrd", tmp_path / "out", "anunet-liver-ct", device="cpu",
                                    level="L2", model_dir=tmp_path / "models", python="py")
    assert command[:3] == ["py", "-m", "MedSegAttentionLib.cli"]
    assert command[3:6] == ["--model-dir", str(tmp_path / "models"), "segment"]
    joined = " ".join(command)
    for part in ("--model anunet-liver-ct", "--device cpu", "--level L2", "--progress-format machine", "--maps all",
                 "--map-storage percent"):
        assert part in joined
    from MedSegAttentionLib.cli import build_parser

    parsed = build_parser().parse_args(command[3:])  # the child's own parser accepts every option
    assert (parsed.model, parsed.level, parsed.map_storage, parsed.montage) == ("anunet-liver-ct", "L2", "percent", False)
    assert "--tta" not in joined  # the card decides unless the user chose
    assert build_segment_command("in.nrrd", "out", "m", tta=True)[-1] == "--tta"
    assert build_segment_command("in.nrrd", "out", "m", tta=False)[-1] == "--no-tta"


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
def test_kill_is_immediate(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.json"
    handler = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    runner = ProcessRunner(script(FAMILY.format(handler=handler, pid_file=str(pid_file))), kill_grace_s=60)
    runner.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text().strip("[]"))
    runner.kill()
    assert runner.wait(timeout_s=10)[-1].status is ExitStatus.CANCELLED
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_child_environment_makes_the_library_importable_from_any_folder(tmp_path: Path) -> None:
    from MedSegAttentionLib.slicer_support.process_runner import PACKAGE_PARENT, cli_environment

    assert (PACKAGE_PARENT / "MedSegAttentionLib" / "__init__.py").is_file()
    env = cli_environment({"PATH": os.environ.get("PATH", "")})
    # -S: no site-packages, so no editable install either; only the PYTHONPATH the runner sets can find it
    done = subprocess.run([sys.executable, "-S", "-c", "import MedSegAttentionLib.errors"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
