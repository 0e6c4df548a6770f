"""The module's non-Qt support code: dependency checks, helper-process answers, level timing, helper pool."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from MedSegAttentionLib.slicer_support import child_reports, dependencies
from MedSegAttentionLib.slicer_support.process_runner import (
    ExitStatus,
    HelperPool,
    ProcessRunner,
    build_cli_command,
    build_install_weights_command,
    build_level_speed_command,
)

REQUIREMENTS = Path(__file__).resolve().parents[2] / "MedSegAttention" / "Resources" / "requirements.txt"
TABLE_6 = {"L1": 103_812, "L2": 513_354, "L3": 2_191_763, "L4": 8_950_495}  # ANU-Net, single head per level


# ------------------------------------------------------------------ dependencies
def test_requirements_are_read_without_comments_or_pip_options(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("# header\nmonai>=1.3  # the framework\n\n-c constraints.txt\nPyYAML>=6.0\n")
    assert dependencies.read_requirements(path) == ["monai>=1.3", "PyYAML>=6.0"]
    assert dependencies.requirement_name("monai[nibabel]>=1.3") == "monai"
    with pytest.raises(ValueError, match="not a requirement"):
        dependencies.requirement_name(">=1.0")


def test_missing_requirements_checks_names_and_version_floors(tmp_path: Path) -> None:
    numpy_version = metadata.version("numpy")
    path = tmp_path / "requirements.txt"
    path.write_text(f"numpy>={numpy_version}\nnumpy>=9999\nno-such-package-medseg>=1.0\n")
    assert dependencies.missing_requirements(path) == ["numpy>=9999", "no-such-package-medseg>=1.0"]
    assert dependencies.missing_requirements(path, torch_requirement=">=999")[0] == "torch>=999"
    # In this environment everything the module installs is present.
    assert dependencies.missing_requirements(REQUIREMENTS) == []


def test_torch_goes_through_the_pytorch_extension_and_is_announced_once() -> None:
    missing = ["torch>=2.2", "monai>=1.3", "safetensors>=0.4"]
    assert dependencies.split_torch(missing) == (True, ["monai>=1.3", "safetensors>=0.4"])
    assert dependencies.split_torch(["monai>=1.3"]) == (False, ["monai>=1.3"])
    text = dependencies.install_summary(missing)
    assert "PyTorch extension" in text and "monai>=1.3, safetensors>=0.4" in text
    assert all(name in text for name in ("numpy", "SimpleITK", "vtk")), "the user is told Slicer's packages stay"


def test_constraints_file_pins_slicers_own_packages_to_the_installed_versions(tmp_path: Path) -> None:
    path = dependencies.write_constraints_file(tmp_path)
    pins = dict(line.split("==") for line in path.read_text().split())
    for name in ("numpy", "SimpleITK", "vtk", "torch"):
        try:
            assert pins[name] == metadata.version(name)
        except metadata.PackageNotFoundError:
            assert name not in pins
    installs = {dependencies.requirement_name(line).lower() for line in dependencies.read_requirements(REQUIREMENTS)}
    assert not installs & {name.lower() for name in dependencies.PROTECTED_PACKAGES}


# ------------------------------------------------------------------ what helper processes report
def test_device_report_shows_the_gpu_or_says_why_not() -> None:
    summary, labels = child_reports.describe_devices({"torch": "2.5.0", "cuda": [{"name": "NVIDIA H100", "memory_gib": 79.1}]})
    assert "NVIDIA H100, 79.1 GiB" in summary
    assert labels == ["auto (NVIDIA H100, 79.1 GiB)", "cuda (NVIDIA H100, 79.1 GiB)", "cuda:1 (not available)",
                      "cuda:2 (not available)", "cuda:3 (not available)", "mps (not available)", "cpu"]
    two = [{"name": "NVIDIA H100", "memory_gib": 79.1}, {"name": "NVIDIA A40", "memory_gib": 44.4}]
    summary, labels = child_reports.describe_devices({"torch": "2.5.0", "cuda": two})
    assert "(+1 more)" in summary and labels[1:3] == ["cuda (NVIDIA H100, 79.1 GiB)", "cuda:1 (NVIDIA A40, 44.4 GiB)"]
    summary, labels = child_reports.describe_devices({"torch": "2.5.0", "cuda": [], "mps": True})
    assert "MPS" in summary and labels[child_reports.DEVICES.index("mps")] == "mps (Apple GPU)"
    assert labels[0] == "auto (Apple GPU)"
    summary, labels = child_reports.describe_devices({"torch": "2.5.0", "cuda": []})
    assert "no CUDA GPU" in summary and labels[1] == "cuda (not available)" and labels[0] == "auto (CPU)"
    summary, labels = child_reports.describe_devices({"torch": None, "error": "ImportError: libcuda"})
    assert "not installed" in summary and "libcuda" in summary and labels == list(child_reports.DEVICES)


def test_model_list_parsing() -> None:
    text = 'noise before\n[{"id": "a", "levels": ["L1", "L2"]}, {"title": "no id"}, {"id": "b"}]'
    models = child_reports.parse_model_list(text)
    assert [m["id"] for m in models] == ["a", "b"]
    assert child_reports.model_levels(models[0]) == ["L1", "L2"] and child_reports.model_levels(models[1]) == []
    assert child_reports.parse_model_list("no json here") == []
    with pytest.raises(ValueError, match="not a model list"):
        child_reports.parse_model_list("[{broken")


def test_real_model_list_offers_levels_for_anunet_only(tmp_path: Path) -> None:
    runner = ProcessRunner(build_cli_command("models", "--json", model_dir=tmp_path), expects_result=False)
    runner.start()
    runner.wait(timeout_s=120)
    assert runner.status is ExitStatus.SUCCESS, runner.stderr_tail()
    levels = {m["id"]: child_reports.model_levels(m) for m in child_reports.parse_model_list(runner.stdout_text())}
    assert levels.pop("anunet-liver-ct") == levels.pop("anunet-left-atrium-mr") == ["L1", "L2", "L3", "L4"]
    assert levels and not any(levels.values())


def test_level_labels_fill_in_as_levels_are_measured() -> None:
    table = {"device": "cuda:0 (NVIDIA H100, 79.1 GiB)", "slice_size": [512, 512],
             "levels": [{"level": "L1", "parameters": 103_812, "ms_per_slice": 3.2},
                        {"level": "L2", "parameters": 513_354, "ms_per_slice": None}]}
    assert child_reports.level_labels(["L1", "L2", "L3"], table) == [
        "L1 - 0.10 M parameters, 3 ms/slice", "L2 - 0.51 M parameters", "L3"]
    assert "measuring L2" in child_reports.level_summary(table) and "512x512" in child_reports.level_summary(table)
    table["levels"][1]["ms_per_slice"] = 7.9
    assert "measured on cuda:0 (NVIDIA H100" in child_reports.level_summary(table)
    assert child_reports.level_labels(["L1"], None) == ["L1"]
    dice = {"L1": 0.612, "L4": 0.881}  # the card's accuracy per level, known before any timing
    assert child_reports.level_labels(["L1", "L3", "L4"], table, dice) == [
        "L1 - 0.10 M parameters, 3 ms/slice, Dice 0.612", "L3", "L4 - Dice 0.881"]


def test_bundling_records_each_levels_accuracy_from_its_evaluations(tmp_path) -> None:
    from training.bundling import level_evaluations

    def summary(folder: str, **fields: object) -> None:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "summary.json").write_text(json.dumps({
            "cases": 16, "variant": "original", "tta": None, "level": None,
            "classes": {"left atrium": {"dice": {"mean": 0.9}}}, **fields}))

    summary("evaluation_fold_0")  # the default level: not a per-level row
    summary("evaluation_fold_0_L1", level="L1", classes={"left atrium": {"dice": {"mean": 0.61}}})
    summary("evaluation_fold_0_L4", level="L4")
    summary("evaluation_fold_0_oblique_L2", level="L2", variant="oblique")  # another delivery: not the card's figure
    assert level_evaluations(tmp_path) == {"L1": {"mean_dice": 0.61, "cases": 16}, "L4": {"mean_dice": 0.9, "cases": 16}}
    summary("evaluation_fold_0_tta", tta=True)  # mirrored: not how the card runs
    (tmp_path / "evaluation_fold_0_L4").rename(tmp_path / "elsewhere")
    assert level_evaluations(tmp_path, default_level="L4")["L4"] == {"mean_dice": 0.9, "cases": 16}  # the plain run
    assert set(level_evaluations(tmp_path)) == {"L1"}


@pytest.mark.slow
def test_level_speed_child_measures_every_anunet_level() -> None:
    command = build_level_speed_command("anunet-liver-ct", "cpu") + ["--slices", "2", "--slice-size", "32"]
    runner = ProcessRunner(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, expects_result=False)
    runner.start()
    events = runner.wait(timeout_s=300)
    assert runner.status is ExitStatus.SUCCESS, runner.error_message or runner.stderr_tail()
    tables = [e.data for e in events if e.kind == "levels"]
    assert len(tables) == 5, "one table with the parameters, then one per measured level"
    assert all(row["ms_per_slice"] is None for row in tables[0]["levels"])
    final = tables[-1]
    assert {row["level"]: row["parameters"] for row in final["levels"]} == TABLE_6
    assert all(row["ms_per_slice"] > 0 for row in final["levels"])
    assert final["device"].startswith("cpu") and final["slice_size"] == [32, 32]
    assert final["backend"].split()[0] in ("openvino", "pytorch")  # what a segmentation on this computer uses
    assert final["backend"] in child_reports.level_summary(final)


def test_level_speed_refuses_a_model_without_levels() -> None:
    runner = ProcessRunner(build_level_speed_command("sipnet-prostate-mr", "cpu"), expects_result=False)
    runner.start()
    runner.wait(timeout_s=120)
    assert runner.exit_code == 2 and runner.status is ExitStatus.BAD_INPUT
    assert "no pruning levels" in runner.error_message


# ------------------------------------------------------------------ commands and the helper pool
def test_install_weights_command() -> None:
    command = build_install_weights_command("m1", "/w/a.safetensors", model_dir="/store", python="py")
    assert command == ["py", "-m", "MedSegAttentionLib.cli", "--model-dir", "/store", "install-weights",
                       "/w/a.safetensors", "--model", "m1"]
    command = build_install_weights_command(weights="w.safetensors", card="c.json", python="py")
    assert command[3:] == ["install-weights", "w.safetensors", "--card", "c.json"]
    command = build_install_weights_command("m1", url="https://x/y.safetensors", download=True, python="py")
    assert command[3:] == ["install-weights", "--model", "m1", "--download", "--url", "https://x/y.safetensors"]


def test_helper_pool_reports_updates_and_completion_and_kills_the_rest() -> None:
    talker = ProcessRunner([sys.executable, "-c", "print('medseg-levels ' + '" + json.dumps({"n": 1}) + "', flush=True)"],
                           expects_result=False)
    sleeper = ProcessRunner([sys.executable, "-c", "import time; time.sleep(60)"], expects_result=False)
    updates, finished = [], []
    pool = HelperPool()
    for runner in (talker, sleeper):
        runner.start()
    pool.add(talker, finished.append, lambda r: updates.append(r.other.get("levels")))
    pool.add(sleeper, finished.append)
    import time

    deadline = time.monotonic() + 60
    while talker not in finished and time.monotonic() < deadline:
        pool.poll()
        time.sleep(0.05)
    assert finished == [talker] and updates and updates[-1] == {"n": 1}
    assert len(pool) == 1
    pool.kill_all()
    assert len(pool) == 0
    sleeper.wait(timeout_s=30)
    assert sleeper.exit_code is not None and sleeper.exit_code != 0


def test_model_choices_grey_what_cannot_run_and_explain_it_in_a_tooltip() -> None:
    from MedSegAttentionLib.cli import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--model-dir", "/nonexistent-medseg-store", "models", "--json"]) == 0
    models = child_reports.parse_model_list(out.getvalue())
    by_id = {m["id"]: child_reports.model_choice(m) for m in models}
    shipped = by_id["sipnet-left-atrium-mr"]
    assert shipped.enabled and not shipped.reason and shipped.label == "SIP-Net left atrium (LGE MR, compact)"
    for fact in ("Modality: MR", "left atrium", "arXiv:2010.04920", "Parameters: 0.76 M", "mean Dice", "Licence: Apache-2.0",
                 "Ships with the extension"):
        assert fact in shipped.tooltip, fact
    untrained = by_id["conresnet-pancreas-ct"]
    assert not untrained.enabled and untrained.label.endswith("(no weights)")
    assert "Install from file..." in untrained.reason and "python -m training" not in untrained.reason
    assert "not measured on real scans yet" in untrained.tooltip and "doi:10.1109/TMI.2020.3034995" in untrained.tooltip
    assert child_reports.first_ready_index(models) == [m["id"] for m in models].index("sipnet-left-atrium-mr")
    assert child_reports.first_ready_index(models, "conresnet-pancreas-ct") == [m["id"] for m in models].index("conresnet-pancreas-ct")
    assert child_reports.first_ready_index([]) == -1
    plain = [{"id": "a", "installed": False}, {"id": "b", "installed": True}, {"id": "c", "installed": True}]
    assert child_reports.first_ready_index(plain) == 1  # no accuracy known: the first that can run
    plain[2]["validation"] = {"mean_dice": 0.9}
    assert child_reports.first_ready_index(plain) == 2  # else the most accurate that can run


def test_install_missing_asks_once_installs_torch_then_the_rest_under_constraints(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("no-such-package-medseg>=1.0\nnumpy>=1.0\n")
    calls = []
    declined = dependencies.install_missing(path, lambda missing: calls.append(("ask", missing)) or False,
                                            lambda: calls.append("torch") or True, lambda *a: calls.append(a), tmp_path)
    assert declined is False and calls == [("ask", ["no-such-package-medseg>=1.0"])]  # declined: nothing installed
    calls.clear()

    def install(lines: list[str], constraints: Path) -> None:
        calls.append((lines, constraints.read_text().split()))

    assert dependencies.install_missing(path, None, lambda: True, install, tmp_path) is False  # still missing after
    (lines, pins), = calls
    assert lines == ["no-such-package-medseg>=1.0"] and f"numpy=={metadata.version('numpy')}" in pins
    path.write_text("numpy>=1.0\n")
    assert dependencies.install_missing(path, lambda m: pytest.fail("nothing to ask"), lambda: False, install) is True
