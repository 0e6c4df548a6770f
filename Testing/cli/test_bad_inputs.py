"""Bad input through ``medseg segment``: never a silent wrong answer, always a specific message, the
user's files untouched. One test per kind of input (small generated files)."""

from __future__ import annotations

import gzip
import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.modelstore.export import export_model
from MedSegAttentionLib.models import build_network
from model_cards import install_random_model, tiny_card
from volumes import phantom_volume


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    store, model_id, weights = install_random_model(root / "store")
    return store, model_id, weights


def _segment(model, inputs: list[Path | str], out: Path, *extra: str) -> int:
    store, model_id, _ = model
    return medseg(["--model-dir", str(store.root), "segment", *map(str, inputs), "--model", model_id,
                   "--device", "cpu", "--output-dir", str(out), "--no-montage", "--progress-format", "none", *extra])


def _write(volume: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(volume, str(path))
    return path


def _refused(model, path: Path, tmp_path: Path, capsys, message: str) -> None:
    before = path.read_bytes()
    assert _segment(model, [path], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err  # one plain line, no ITK text
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, keep", [("half.nii.gz", 0.5), ("most.nii.gz", 0.95), ("half.nii", 0.5), ("most.nii", 0.95)])
def test_truncated_nifti_is_refused(model, tmp_path, capsys, name: str, keep: float) -> None:
    whole = _write(phantom_volume()[0], tmp_path / ("whole" + name[name.index("."):]))
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * keep)])
    _refused(model, cut, tmp_path, capsys, "truncated or damaged")


def test_nan_and_inf_voxels_are_refused_as_documented(model, tmp_path, capsys) -> None:
    volume, _ = phantom_volume()
    array = sitk.GetArrayFromImage(volume).astype(np.float32)
    array[1, 2, 3], array[4, 5, 6] = np.nan, np.inf
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(volume)
    _refused(model, _write(image, tmp_path / "nan.nii.gz"), tmp_path, capsys, "2 NaN or infinite voxel value(s)")
    everything = sitk.GetImageFromArray(np.full_like(array, np.nan))
    _refused(model, _write(everything, tmp_path / "allnan.nii"), tmp_path, capsys, "NaN or infinite")


def _patch_nifti(path: Path, offset: int, fmt: str, value: float | int) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


def test_zero_spacing_in_the_header_is_refused(model, tmp_path, capsys) -> None:
    volume, _ = phantom_volume(oblique=False)
    path = _write(volume, tmp_path / "spacing0.nii")
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, 80, 0.0)  # pixdim[1] (x spacing)
    struct.pack_into("<h", data, 254, 0)  # sform_code 0: the spacing comes from pixdim alone
    struct.pack_into("<h", data, 252, 0)  # qform_code 0 too
    path.write_bytes(bytes(data))
    _refused(model, path, tmp_path, capsys, "voxel spacing 0 along axis x")


def test_huge_header_dimensions_are_refused_before_allocating(model, tmp_path, capsys) -> None:
    path = _write(phantom_volume()[0], tmp_path / "huge.nii")
    _patch_nifti(path, 42, "<h", 30000)
    _patch_nifti(path, 44, "<h", 30000)
    _refused(model, path, tmp_path, capsys, "the header promises")
    packed = tmp_path / "huge.nii.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    _refused(model, packed, tmp_path, capsys, "the voxel data stops after")


def test_a_label_map_given_as_the_image_warns(model, tmp_path, capsys) -> None:
    volume, label = phantom_volume()
    mask = sitk.GetImageFromArray(label.astype(np.uint8))
    mask.CopyInformation(volume)
    path = _write(mask, tmp_path / "mask.nii.gz")
    assert _segment(model, [path], tmp_path / "out") == 0
    assert "looks like a label map" in capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "mask" / "result.json").read_text())
    assert any("label map" in w for w in doc["warnings"])


def test_an_empty_segmentation_is_not_returned_without_a_word(tmp_path, capsys) -> None:
    """A model that finds nothing (here: a head that always scores background higher) still exits 0 (the
    structure may be outside the field of view), but says that the result is empty and what to check."""
    import torch

    from MedSegAttentionLib.modelstore.store import ModelStore

    card = tiny_card("tiny-finds-nothing")
    network = build_network(card["networks"]["main"]["config"])
    with torch.no_grad():  # after the ReLU every feature is >= 0: background score >= 0 >= foreground score
        network.head[2].weight.zero_()
        network.head[2].weight[0].fill_(1.0)
        network.head[2].weight[1].fill_(-1.0)
    card_path, weights = export_model(card, {"main": network}, tmp_path / "export")
    store = ModelStore(tmp_path / "store")
    store.install_card(card_path, weights)
    path = _write(phantom_volume()[0], tmp_path / "scan.nii.gz")
    assert _segment((store, card["id"], weights), [path], tmp_path / "out") == 0
    assert "the segmentation is empty: the model found no prostate" in capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "scan" / "result.json").read_text())
    assert any(w.startswith("the segmentation is empty") and "MR" in w for w in doc["warnings"])
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "scan" / "segmentation.nrrd"))).any()


def _dicom_series(folder: Path, positions_mm: list[float], series_uid: str = "1.2.826.0.1.3680043.2.1125.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    rng = np.random.default_rng(0)
    for index, z in enumerate(positions_mm):
        plane = sitk.GetImageFromArray((rng.random((1, 24, 20)) * 400).astype(np.int16))
        plane.SetSpacing((0.8, 0.8, 1.0))
        tags = {"0020|000e": series_uid, "0020|0032": f"0\\0\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0013": str(index + 1), "0008|0060": "MR", "0028|0030": "0.8\\0.8",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.9", "0008|0018": f"{series_uid}.{index + 1}"}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid.replace('.', '_')}_slice{index:03d}.dcm"))
        writer.Execute(plane)
    return folder


def test_dicom_series_with_a_missing_slice_is_refused_with_the_gap(model, tmp_path, capsys) -> None:
    positions = [2.0 * i for i in range(12) if i != 6]  # slice 6 missing
    folder = _dicom_series(tmp_path / "gap", positions)
    assert _segment(model, [folder], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "has a gap" in err and "10.00 mm and 14.00 mm" in err and "about 1 slice(s) missing" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_mixed_dicom_folder_names_every_series(model, tmp_path, capsys) -> None:
    folder = _dicom_series(tmp_path / "mixed", [2.0 * i for i in range(4)], "1.2.3.4.1")
    _dicom_series(folder, [2.0 * i for i in range(4, 9)], "1.2.3.4.2")
    assert _segment(model, [folder], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "holds 2 DICOM series" in err and "1.2.3.4.1" in err and "1.2.3.4.2" in err, err


def test_batch_runs_every_good_case_then_fails_with_a_summary(model, tmp_path, capsys) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    _write(phantom_volume(seed=1)[0], batch / "a_good.nii.gz")
    (batch / "b_bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    _write(phantom_volume(seed=2)[0], batch / "c_good.nii.gz")
    assert _segment(model, [batch], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert (tmp_path / "out" / "a_good" / "result.json").is_file() and (tmp_path / "out" / "c_good" / "result.json").is_file()
    assert not (tmp_path / "out" / "b_bad").exists()
    assert "1 of 3 case(s) failed, the other 2 were written: b_bad:" in err


def test_output_folder_that_cannot_be_created_is_a_plain_input_error(model, tmp_path, capsys) -> None:
    image = _write(phantom_volume()[0], tmp_path / "case.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file")
    assert _segment(model, [image], blocker / "out") == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "internal error" not in err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _segment(model, [image], locked / "out") == 2
        assert "cannot create the output folder" in capsys.readouterr().err


def test_overwrite_replaces_only_what_medseg_wrote(model, tmp_path, capsys) -> None:
    image = _write(phantom_volume()[0], tmp_path / "case.nii.gz")
    out = tmp_path / "out"
    assert _segment(model, [image], out) == 0
    case = out / "case"
    (case / "my_notes.txt").write_text("reading notes")
    (case / "maps" / "my_drawing.nrrd").write_bytes(b"mine")
    assert _segment(model, [image], out, "--overwrite", "--maps", "attention_1") == 0
    assert (case / "my_notes.txt").read_text() == "reading notes"
    assert (case / "maps" / "my_drawing.nrrd").read_bytes() == b"mine"
    assert sorted(p.name for p in (case / "maps").iterdir()) == ["attention_1.nrrd", "my_drawing.nrrd"]
    assert json.loads((case / "result.json").read_text())["maps"][0]["name"] == "attention_1"


def test_result_folders_follow_the_umask(model, tmp_path, capsys) -> None:
    image = _write(phantom_volume()[0], tmp_path / "case.nii.gz")
    previous = os.umask(0o022)
    try:
        assert _segment(model, [image], tmp_path / "out") == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out" / "case").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "case" / "maps").stat().st_mode) == 0o755


def test_install_refuses_a_non_safetensors_file_and_another_models_file_name(model, tmp_path, capsys) -> None:
    store, model_id, weights = model
    card = tiny_card("tiny-bad-install")
    card_path, good = export_model(card, {"main": build_network(card["networks"]["main"]["config"])}, tmp_path / "exp")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 64)
    doc = json.loads(Path(card_path).read_text())
    from MedSegAttentionLib.modelstore.weights import sha256_file

    doc["weights"]["sha256"] = sha256_file(fake)
    fake_card = tmp_path / "fake.json"
    fake_card.write_text(json.dumps(doc))
    args = ["--model-dir", str(store.root), "install-weights", "--card"]
    assert medseg(args + [str(fake_card), str(fake)]) == 3
    assert "not a safetensors weights file" in capsys.readouterr().err
    assert not (store.weights_dir / doc["weights"]["file"]).exists()

    doc = json.loads(Path(card_path).read_text())
    doc["weights"]["file"] = weights.name  # the installed test model's file
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    before = (store.weights_dir / weights.name).read_bytes()
    assert medseg(args + [str(other), str(good)]) == 3
    assert f"belongs to {model_id}" in capsys.readouterr().err
    assert (store.weights_dir / weights.name).read_bytes() == before
