"""The ``medseg`` command line, run as a real subprocess the way scripts and the Slicer module run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from model_cards import install_random_model
from volumes import phantom_volume


def run_medseg(args: list[str], store: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDSEG_MODEL_DIR": str(store)}
    return subprocess.run([sys.executable, "-m", "MedSegAttentionLib.cli", *args], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, **kwargs)


def machine_lines(stdout: str, kind: str) -> list[dict]:
    prefix = f"medseg-{kind} "
    return [json.loads(line[len(prefix):]) for line in stdout.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    store, model_id, _ = install_random_model(root / "store")
    volume, _ = phantom_volume(oblique=True)
    image_path = root / "case01.nii.gz"
    sitk.WriteImage(volume, str(image_path))
    return root, store.root, model_id, image_path, volume


def test_models_lists_installed_and_missing(installed) -> None:
    _, store, model_id, _, _ = installed
    proc = run_medseg(["models", "--json"], store)
    assert proc.returncode == 0, proc.stderr
    entries = {e["id"]: e for e in json.loads(proc.stdout)}
    assert entries[model_id]["installed"] is True
    missing = [e for e in entries.values() if not e["installed"]]
    assert all("install-weights" in e["how_to_install"] for e in missing)


def test_segment_writes_aligned_outputs_with_machine_progress(installed, tmp_path) -> None:
    _, store, model_id, image_path, volume = installed
    proc = run_medseg(["segment", str(image_path), "--model", model_id, "--device", "cpu", "--output-dir", str(tmp_path),
                       "--progress-format", "machine"], store)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fractions = [p["fraction"] for p in machine_lines(proc.stdout, "progress")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 5
    (result,) = machine_lines(proc.stdout, "result")
    out = Path(result["output_dir"])
    assert out == tmp_path / "case01"
    label = sitk.ReadImage(str(out / "segmentation.nrrd"))
    assert label.GetSize() == volume.GetSize()
    np.testing.assert_allclose(label.GetDirection(), volume.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(label.GetOrigin(), volume.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(label.GetSpacing(), volume.GetSpacing(), atol=1e-9)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["attention_1.nrrd", "attention_2.nrrd", "attention_3.nrrd"]
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_exits_2_with_a_specific_message(installed, tmp_path) -> None:
    _, store, model_id, _, _ = installed
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16), str(flat))
    proc = run_medseg(["segment", str(flat), "--model", model_id, "--output-dir", str(tmp_path / "o"), "--progress-format", "machine"], store)
    assert proc.returncode == 2
    (error,) = machine_lines(proc.stdout, "error")
    assert "2-D image" in error["message"] and error["code"] == 2
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_inference_settings_switch_off_added_steps_and_are_recorded(installed, tmp_path) -> None:
    """A researcher runs the network as its paper does: plain averaging, no largest-component step."""
    _, store, model_id, image_path, _ = installed
    common = ["segment", str(image_path), "--model", model_id, "--device", "cpu", "--no-montage", "--maps", "none"]
    default = run_medseg(common + ["--output-dir", str(tmp_path / "default")], store)
    paper = run_medseg(common + ["--output-dir", str(tmp_path / "paper"), "--inference", 'blend="constant"',
                                 "--inference", "largest_component=false"], store)
    assert default.returncode == 0 and paper.returncode == 0, default.stderr + paper.stderr
    used = {name: json.loads((tmp_path / name / "case01" / "result.json").read_text())["model"]["inference"]
            for name in ("default", "paper")}
    assert used["paper"]["blend"] == "constant" and used["paper"]["largest_component"] is False
    assert used["default"].get("blend", "gaussian") == "gaussian" and "largest_component" not in used["default"]
    for bad, message in (("blend=median", "blend"), ("mode=\"slicewise\"", "mode cannot be changed"), ("overlap", "KEY=VALUE")):
        proc = run_medseg(common + ["--output-dir", str(tmp_path / "bad"), "--inference", bad], store)
        assert proc.returncode == 2 and message in proc.stderr, (bad, proc.stderr)


def test_unknown_model_exits_3(installed, tmp_path) -> None:
    _, store, _, image_path, _ = installed
    proc = run_medseg(["segment", str(image_path), "--model", "no-such-model", "--output-dir", str(tmp_path)], store)
    assert proc.returncode == 3 and "unknown model" in proc.stderr


def test_batch_folder_segments_every_case(installed, tmp_path) -> None:
    _, store, model_id, image_path, volume = installed
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(volume, str(folder / "a.nrrd"))
    sitk.WriteImage(volume, str(folder / "b.mha"))
    proc = run_medseg(["segment", str(folder), "--model", model_id, "--device", "cpu", "--maps", "attention_1",
                       "--no-montage", "--output-dir", str(tmp_path / "out"), "--progress-format", "none"], store)
    assert proc.returncode == 0, proc.stderr
    for case in ("a", "b"):
        assert (tmp_path / "out" / case / "maps" / "attention_1.nrrd").is_file()
        assert not (tmp_path / "out" / case / "maps" / "attention_2.nrrd").exists()


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
def test_sigterm_cancels_and_leaves_no_files(installed, tmp_path) -> None:
    _, store, model_id, _, _ = installed
    big, _ = phantom_volume(size_zyx=(48, 96, 96), spacing_xyz=(1.0, 1.0, 1.5))
    path = tmp_path / "big.nii.gz"
    sitk.WriteImage(big, str(path))
    env = {**os.environ, "MEDSEG_MODEL_DIR": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "MedSegAttentionLib.cli", "segment", str(path), "--model", model_id,
                             "--device", "cpu", "--batch-size", "1", "--output-dir", str(tmp_path / "out"),
                             "--progress-format", "machine"], env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until inference is under way
        if line.startswith("medseg-progress") and "sliding window" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "cancelled" in rest
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_torchrun_shards_a_batch_across_processes(installed, tmp_path) -> None:
    """Under PyTorch's distributed launcher each rank segments its own share of the cases."""
    _, store, model_id, _, volume = installed
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("p1", "p2", "p3"):
        sitk.WriteImage(volume, str(folder / f"{name}.nii.gz"))
    env = {**os.environ, "MEDSEG_MODEL_DIR": str(store), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29613",
         "-m", "MedSegAttentionLib.cli", "segment", str(folder), "--model", model_id, "--device", "cpu", "--maps", "none",
         "--no-montage", "--output-dir", str(tmp_path / "out"), "--progress-format", "machine"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = sorted(Path(r["output_dir"]).name for r in machine_lines(proc.stdout, "result"))
    assert written == ["p1", "p2", "p3"]  # each case once, none twice
    assert all((tmp_path / "out" / name / "segmentation.nrrd").is_file() for name in written)


def test_devices_json_is_one_protocol_line(capsys) -> None:
    from MedSegAttentionLib.cli import main
    from MedSegAttentionLib.protocol import parse_line

    assert main(["devices", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    event = parse_line(lines[0])
    assert event.kind == "devices" and event.data["torch"] and isinstance(event.data["cuda"], list)
    assert "mps" in event.data["choices"]
