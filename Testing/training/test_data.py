"""training.data / caseio / labels / splits: MSD and nnU-Net v2 data sets, geometry, label mapping, k-fold splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import ellipsoid_phantom
from training.case_reading import GeometryMismatchError, read_case, verify_dataset
from training.raw_dataset import DatasetError, load_dataset
from training.labels import map_labels, resolve_label_mapping
from training.splits import fold_cases, load_or_create_splits, make_splits

SHAPE = (8, 10, 12)  # numpy (z, y, x)
SPACING_XYZ = (0.8, 0.7, 2.5)
ORIGIN = (-12.5, 30.0, 4.0)
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)


def _write(array: np.ndarray, path: Path, spacing=SPACING_XYZ, origin=ORIGIN) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _phantom(i: int) -> tuple[np.ndarray, np.ndarray]:
    return ellipsoid_phantom(SHAPE, seed=i, num_classes=3)


@pytest.fixture
def msd_root(tmp_path: Path) -> Path:
    """Five MSD-layout cases: 3D NIfTI, labels 0/1/2, anisotropic spacing, non-zero origin, flipped axes."""
    root = tmp_path / "Task99_Phantom"
    training = []
    for i in range(5):
        image, label = _phantom(i)
        _write(image, root / "imagesTr" / f"ph_{i:03d}.nii.gz")
        _write(label.astype(np.uint8), root / "labelsTr" / f"ph_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/ph_{i:03d}.nii.gz", "label": f"./labelsTr/ph_{i:03d}.nii.gz"})
    meta = {
        "name": "Phantom",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "outer", "2": "inner"},
        "numTraining": 5,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_msd_dataset_reads_back(msd_root: Path) -> None:
    ds = load_dataset(msd_root)
    assert ds.name == "Phantom" and len(ds) == 5 and ds.num_channels == 1
    assert ds.case_ids == [f"ph_{i:03d}" for i in range(5)]
    assert ds.labels == {0: "background", 1: "outer", 2: "inner"}
    assert ds.file_ending == ".nii.gz"
    geometries = verify_dataset(ds)
    assert geometries["ph_000"].spacing == pytest.approx(SPACING_XYZ)

    data = read_case(ds.case("ph_003"))
    image, label = _phantom(3)
    assert data.image.shape == (1, *SHAPE) and data.image.dtype == np.float32
    np.testing.assert_array_equal(data.image[0], image)
    np.testing.assert_array_equal(data.label, label)
    assert data.label.dtype == np.int16
    assert data.spacing == pytest.approx(tuple(reversed(SPACING_XYZ)))  # numpy axis order
    assert data.origin == pytest.approx(ORIGIN)
    assert data.direction == pytest.approx(DIRECTION)


def test_read_case_applies_label_mapping(msd_root: Path) -> None:
    ds = load_dataset(msd_root)
    _, label = _phantom(1)
    gland = read_case(ds.case("ph_001"), label_mapping="prostate_gland").label
    np.testing.assert_array_equal(gland, (label > 0).astype(np.int16))
    inner = read_case(ds.case("ph_001"), label_mapping={"2": "1"}).label  # YAML/JSON-style string keys
    np.testing.assert_array_equal(inner, (label == 2).astype(np.int16))


def test_missing_label_file_is_named(msd_root: Path) -> None:
    (msd_root / "labelsTr" / "ph_002.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"ph_002.*label.*missing"):
        load_dataset(msd_root)


def test_missing_image_and_dataset_json(msd_root: Path, tmp_path: Path) -> None:
    (msd_root / "imagesTr" / "ph_004.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"ph_004.*image"):
        load_dataset(msd_root)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_dataset(tmp_path)


def test_geometry_mismatch_is_reported(msd_root: Path) -> None:
    _, label = _phantom(0)
    _write(label.astype(np.uint8), msd_root / "labelsTr" / "ph_000.nii.gz", spacing=(0.8, 0.7, 3.0))
    _write(label[:, :, :-1].astype(np.uint8), msd_root / "labelsTr" / "ph_001.nii.gz")
    _write(label.astype(np.uint8), msd_root / "labelsTr" / "ph_002.nii.gz", origin=(-12.5, 31.0, 4.0))
    ds = load_dataset(msd_root)
    with pytest.raises(GeometryMismatchError, match=r"ph_000.*spacing"):
        read_case(ds.case("ph_000"))
    with pytest.raises(GeometryMismatchError, match=r"ph_001.*size"):
        read_case(ds.case("ph_001"))
    with pytest.raises(GeometryMismatchError, match=r"ph_002.*label.*origin"):
        read_case(ds.case("ph_002"))
    with pytest.raises(GeometryMismatchError, match="ph_000"):
        verify_dataset(ds)


def test_float_labels_are_accepted(msd_root: Path) -> None:
    _, label = _phantom(0)
    _write(label.astype(np.float32), msd_root / "labelsTr" / "ph_000.nii.gz")
    data = read_case(load_dataset(msd_root).case("ph_000"))
    np.testing.assert_array_equal(data.label, label)


def test_nnunet_v2_layout_two_channels_nrrd(tmp_path: Path) -> None:
    root = tmp_path / "Dataset042_Two"
    for i in range(3):
        image, label = _phantom(10 + i)
        _write(image, root / "imagesTr" / f"case{i}_0000.nrrd")
        _write(image * 2.0 + 1.0, root / "imagesTr" / f"case{i}_0001.nrrd")
        _write(label.astype(np.uint8), root / "labelsTr" / f"case{i}.nrrd")
    meta = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "PZ": 1, "TZ": 2},
        "numTraining": 3,
        "file_ending": ".nrrd",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert ds.case_ids == ["case0", "case1", "case2"] and ds.num_channels == 2
    assert ds.labels == {0: "background", 1: "PZ", 2: "TZ"} and ds.file_ending == ".nrrd"
    data = read_case(ds.case("case1"))
    image, label = _phantom(11)
    assert data.image.shape == (2, *SHAPE)
    np.testing.assert_allclose(data.image[1], image * 2.0 + 1.0, rtol=1e-6)
    np.testing.assert_array_equal(data.label, label)

    (root / "imagesTr" / "case2_0001.nrrd").unlink()
    with pytest.raises(DatasetError, match=r"case2.*case2_0001.nrrd"):
        load_dataset(root)


def test_msd_list_with_nnunet_channel_files(msd_root: Path) -> None:
    for p in (msd_root / "imagesTr").iterdir():
        p.rename(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz")))
    ds = load_dataset(msd_root)
    assert ds.case("ph_000").images[0].name == "ph_000_0000.nii.gz"


def test_msd_four_d_multimodal_image(msd_root: Path) -> None:
    image, label = _phantom(0)
    channels = []
    for scale in (1.0, -3.0):
        img = sitk.GetImageFromArray(image * scale)
        img.SetSpacing(SPACING_XYZ)
        img.SetOrigin(ORIGIN)
        img.SetDirection(DIRECTION)
        channels.append(img)
    sitk.WriteImage(sitk.JoinSeries(channels), str(msd_root / "imagesTr" / "ph_000.nii.gz"))
    ds = load_dataset(msd_root)
    data = read_case(ds.case("ph_000"))
    assert data.image.shape == (2, *SHAPE)
    np.testing.assert_allclose(data.image[1], image * -3.0, rtol=1e-6)
    assert data.spacing == pytest.approx(tuple(reversed(SPACING_XYZ)))
    assert verify_dataset(ds)["ph_000"].channels == 2


# ----------------------------------------------------------------------------------------------- labels
def test_map_labels() -> None:
    label = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(map_labels(label, {1: 1, 2: 1}), [[0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(map_labels(label, "lits_tumour"), [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(map_labels(label, {2: 1, 1: 2}, unmapped="keep"), [[0, 2, 1], [3, 1, 2]])
    with pytest.raises(ValueError, match=r"\[3\]"):
        map_labels(label, {0: 0, 1: 1, 2: 2}, unmapped="error")
    with pytest.raises(ValueError, match="presets"):
        resolve_label_mapping("no_such_mapping")
    with pytest.raises(TypeError):
        map_labels(label.astype(np.float32), {1: 1})
    assert resolve_label_mapping({"1": 1, "2": "1"}) == {1: 1, 2: 1}


# ----------------------------------------------------------------------------------------------- splits
IDS = [f"c{i:02d}" for i in range(11)]


def test_splits_deterministic_disjoint_and_covering() -> None:
    splits = make_splits(IDS, n_folds=5, seed=7)
    assert splits == make_splits(list(reversed(IDS)), n_folds=5, seed=7)  # seeded, order-independent
    assert splits != make_splits(IDS, n_folds=5, seed=8)
    vals = [set(s["val"]) for s in splits]
    assert sorted(i for v in vals for i in v) == IDS  # disjoint and covering
    assert {len(v) for v in vals} <= {2, 3}
    for s in splits:
        assert set(s["train"]).isdisjoint(s["val"]) and sorted(s["train"] + s["val"]) == IDS
    with pytest.raises(ValueError):
        make_splits(IDS[:3], n_folds=5)


def test_splits_saved_and_reused(tmp_path: Path) -> None:
    experiment = tmp_path / "runs" / "exp"
    first = load_or_create_splits(experiment, IDS, n_folds=3, seed=1)
    path = experiment / "splits.json"
    assert json.loads(path.read_text()) == first
    # a hand-edited file is reused as is, whatever the seed says
    edited = [
        {"train": IDS[4:], "val": IDS[:4]},
        {"train": IDS[:4] + IDS[8:], "val": IDS[4:8]},
        {"train": IDS[:8], "val": IDS[8:]},
    ]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(experiment, IDS, n_folds=3, seed=999) == edited
    with pytest.raises(ValueError, match="folds"):
        load_or_create_splits(experiment, IDS, n_folds=5)
    with pytest.raises(ValueError, match="not in the data set"):
        load_or_create_splits(experiment, IDS[:-1], n_folds=3)
    with pytest.warns(UserWarning, match="in no fold"):
        assert load_or_create_splits(experiment, IDS + ["c99"], n_folds=3) == edited
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*delete it"):
        load_or_create_splits(experiment, IDS, n_folds=3)


def test_fold_cases(msd_root: Path) -> None:
    ds = load_dataset(msd_root)
    splits = make_splits(ds.case_ids, n_folds=2)
    train, val = fold_cases(ds, splits, 1)
    assert {c.case_id for c in val} == set(splits[1]["val"]) and len(train) + len(val) == 5
    assert fold_cases(ds, splits, "all") == (ds.cases, [])
    with pytest.raises(ValueError):
        fold_cases(ds, splits, 2)


# ----------------------------------------------------------------------------------------------- real data
@pytest.mark.shared_data
def test_left_atrium_2018(shared_data: Path) -> None:
    root = shared_data / "LeftAtrium2018"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ds = load_dataset(root)
    assert len(ds) == 80 and ds.labels == {0: "background", 1: "left atrium"}
    geometries = verify_dataset(ds)  # headers only: every label matches its image
    assert all(g.spacing == pytest.approx((0.625, 0.625, 0.625)) for g in geometries.values())
    splits = make_splits(ds.case_ids, n_folds=5)
    assert sorted(len(s["val"]) for s in splits) == [16] * 5


@pytest.mark.shared_data
def test_prostate_labels_map_to_gland(shared_data: Path) -> None:
    files = sorted((shared_data / "ProstateMSDLabels" / "labelsTr").glob("*.nii.gz"))
    if not files:
        pytest.skip("ProstateMSDLabels/labelsTr is absent")
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(files[0])))
    assert set(np.unique(label).tolist()) == {0, 1, 2}  # PZ and TZ
    np.testing.assert_array_equal(map_labels(label, "prostate_gland"), (label > 0).astype(label.dtype))
