"""End to end through the engine: geometry round trip, maps, store verification, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.result_folder import write_result
from MedSegAttentionLib.errors import Cancelled, InputError, ModelError
from model_cards import install_random_model, tiny_card
from volumes import phantom_volume


@pytest.fixture
def tiny_model(tmp_path):
    return install_random_model(tmp_path / "store")


def _assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-12)


def test_outputs_lie_on_the_oblique_anisotropic_input_grid(tiny_model, tmp_path) -> None:
    store, model_id, _ = tiny_model
    volume, _ = phantom_volume(oblique=True)
    before = sitk.GetArrayFromImage(volume).copy()
    result = segment(volume, store.card(model_id), store, device="cpu")
    _assert_same_grid(result.label, volume)
    assert set(result.maps) == {"attention_1", "attention_2", "attention_3"}
    for image in result.maps.values():
        _assert_same_grid(image, volume)
        values = sitk.GetArrayViewFromImage(image)
        assert values.min() >= 0.0 and values.max() <= 1.0
    assert set(np.unique(sitk.GetArrayViewFromImage(result.label))) <= {0, 1}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), before)  # input untouched

    out = write_result(result, tmp_path / "out" / "case")
    doc = json.loads((out / "result.json").read_text())
    assert doc["labels"][0]["name"] == "prostate" and len(doc["maps"]) == 3
    _assert_same_grid(sitk.ReadImage(str(out / "segmentation.nrrd")), volume)
    _assert_same_grid(sitk.ReadImage(str(out / "maps" / "attention_2.nrrd")), volume)

    # compact storage (the Slicer module's): whole percent in one byte, on the same grid, the unit said
    compact = write_result(result, tmp_path / "compact" / "case", map_storage="percent")
    entry = json.loads((compact / "result.json").read_text())["maps"][1]
    assert (entry["name"], entry["range"], entry["unit"]) == ("attention_2", [0.0, 100.0], "percent")
    stored = sitk.ReadImage(str(compact / "maps" / "attention_2.nrrd"))
    _assert_same_grid(stored, volume)
    assert stored.GetPixelID() == sitk.sitkUInt8
    exact = sitk.GetArrayViewFromImage(result.maps["attention_2"]) * 100.0
    assert np.abs(sitk.GetArrayViewFromImage(stored) - exact).max() <= 0.5 + 1e-4
    assert (compact / "maps" / "attention_2.nrrd").stat().st_size < (out / "maps" / "attention_2.nrrd").stat().st_size


def test_only_maps_in_0_1_are_stored_as_percent() -> None:
    """A raw map (RSTN's saliency weights, range "data") keeps its float values: percent would mislabel it."""
    from MedSegAttentionLib.inference.map_storage import bytes_per_voxel, stored_map

    raw = sitk.GetImageFromArray(np.array([[[-1.5, 0.25, 2.5]]], dtype=np.float32))
    kept = stored_map(raw, (-1.5, 2.5), "percent")
    assert kept.unit is None and kept.value_range == (-1.5, 2.5) and kept.image.GetPixelID() == sitk.sitkFloat32
    unit = stored_map(sitk.GetImageFromArray(np.array([[[0.0, 0.004, 0.006, 0.5, 1.0]]], dtype=np.float32)), (0.0, 1.0), "percent")
    assert sitk.GetArrayViewFromImage(unit.image).ravel().tolist() == [0, 0, 1, 50, 100]
    assert [bytes_per_voxel(r, "percent") for r in (None, [0.0, 1.0], "data")] == [1, 1, 4]
    assert bytes_per_voxel(None, "float32") == 4
    with pytest.raises(ValueError, match="unknown map storage"):
        stored_map(raw, (0.0, 1.0), "float16")


def test_tampered_weights_are_refused(tiny_model) -> None:
    store, model_id, _ = tiny_model
    weights = store.weights_path(store.card(model_id))
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    volume, _ = phantom_volume()
    with pytest.raises(ModelError, match="does not match its model card"):
        segment(volume, store.card(model_id), store, device="cpu")


def test_not_installed_model_says_how_to_install(tmp_path) -> None:
    from MedSegAttentionLib.modelstore.export import export_model
    from MedSegAttentionLib.models import build_network
    from MedSegAttentionLib.modelstore.store import ModelStore

    card = tiny_card()
    card_path, _ = export_model(card, {"main": build_network(card["networks"]["main"]["config"])}, tmp_path / "exp")
    store = ModelStore(tmp_path / "store")
    (store.cards_dir).mkdir(parents=True)
    (store.cards_dir / card_path.name).write_text(card_path.read_text())
    with pytest.raises(ModelError, match="not installed.*install-weights"):
        segment(phantom_volume()[0], store.card(card["id"]), store, device="cpu")


def test_wrong_weights_file_is_refused_at_install(tiny_model, tmp_path) -> None:
    store, model_id, _ = tiny_model
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="does not match the card"):
        store.install_weights(model_id, other)


def test_cancel_half_way_writes_nothing(tiny_model, tmp_path) -> None:
    store, model_id, _ = tiny_model
    seen: list[float] = []

    def cancel() -> bool:
        return len(seen) >= 4

    with pytest.raises(Cancelled):
        segment(phantom_volume()[0], store.card(model_id), store, device="cpu", progress=lambda f, m: seen.append(f), cancel=cancel)
    assert 0 < max(seen) < 1


def test_unknown_map_and_level_are_input_errors(tiny_model) -> None:
    store, model_id, _ = tiny_model
    card = store.card(model_id)
    with pytest.raises(InputError, match="no map"):
        segment(phantom_volume()[0], card, store, device="cpu", maps=["saliency"])
    with pytest.raises(InputError, match="cannot be pruned"):
        segment(phantom_volume()[0], card, store, device="cpu", level="L2")


def test_existing_output_is_not_overwritten(tiny_model, tmp_path) -> None:
    store, model_id, _ = tiny_model
    result = segment(phantom_volume()[0], store.card(model_id), store, device="cpu", maps=False)
    out = write_result(result, tmp_path / "case")
    with pytest.raises(InputError, match="already exists"):
        write_result(result, out)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_predictor_loads_once_and_predicts_many(tiny_model, monkeypatch) -> None:
    from MedSegAttentionLib.inference.engine import Predictor

    store, model_id, _ = tiny_model
    card = store.card(model_id)
    loads = []
    original = store.load_networks
    monkeypatch.setattr(store, "load_networks", lambda *a, **k: loads.append(a) or original(*a, **k))
    predictor = Predictor(card, store, device="cpu")
    volumes = [phantom_volume(seed=s)[0] for s in range(3)]
    results = [predictor.predict(v, maps=False) for v in volumes]
    assert len(loads) == 1
    for volume, result in zip(volumes, results):
        assert result.image is volume and result.label.GetSize() == volume.GetSize() and result.maps == {}
    one_shot = segment(volumes[1], card, store, device="cpu", maps=False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one_shot.label), sitk.GetArrayFromImage(results[1].label))
    with pytest.raises(ModelError, match="pass the model store or the loaded networks"):
        Predictor(card, None, device="cpu")


def test_nonzero_region_crops_zero_borders_only() -> None:
    from MedSegAttentionLib.inference.nonzero_crop import crop_region, nonzero_region, paste_region

    volume, _ = phantom_volume(oblique=True)  # oblique direction, anisotropic spacing
    assert nonzero_region(volume) is None  # nothing to crop
    padded = sitk.ConstantPad(volume, [5, 3, 2], [4, 6, 1], 0)
    region = nonzero_region(padded)
    assert region.index == (5, 3, 2) and region.size == volume.GetSize()
    cropped = crop_region(padded, region)
    _assert_same_grid(cropped, volume)  # the same voxels at the same place in physical space
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(cropped), sitk.GetArrayViewFromImage(volume))
    back = paste_region(cropped, padded, region)
    _assert_same_grid(back, padded)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(padded))
    assert nonzero_region(padded * 0) is None  # all zero: left as it is
    sliver = sitk.Image(padded.GetSize(), padded.GetPixelID())
    sliver[10, 10, 0:3] = 1  # three voxels thick in every direction: too thin to run a network on
    assert nonzero_region(sliver) is None


def test_crop_to_nonzero_gives_a_zero_padded_scan_the_answer_of_the_tight_one(tmp_path) -> None:
    """With ``crop_to_nonzero`` a scan delivered in a larger zero-filled field of view is segmented as the
    tightly stored scan is (the same label and maps inside, background outside), on its own grid. The
    tight scan is the crop (the same voxels as ``volume``, its origin equal to 1e-14 mm: enough to move
    a resampled edge sample across the image border, so the comparison is with the crop itself)."""
    from MedSegAttentionLib.inference.nonzero_crop import crop_region, nonzero_region

    card = tiny_card(crop_to_nonzero=True)
    card["maps"][0]["range"] = "data"  # shown over its own range, which the zeros outside must not widen
    store, model_id, _ = install_random_model(tmp_path / "store", card)
    card = store.card(model_id)
    volume, _ = phantom_volume(oblique=True)
    padded = sitk.ConstantPad(volume, [7, 5, 3], [6, 9, 4], 0)
    before = sitk.GetArrayFromImage(padded).copy()
    tight = segment(crop_region(padded, nonzero_region(padded)), card, store, device="cpu")
    wide = segment(padded, card, store, device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(padded), before)  # input untouched
    _assert_same_grid(wide.label, padded)
    assert set(wide.map_ranges) == set(tight.map_ranges) and tight.map_ranges["attention_1"][0] > 0
    for name, value_range in tight.map_ranges.items():
        np.testing.assert_allclose(wide.map_ranges[name], value_range, rtol=0, atol=1e-6)
    inner = (slice(3, 3 + volume.GetSize()[2]), slice(5, 5 + volume.GetSize()[1]), slice(7, 7 + volume.GetSize()[0]))
    label = sitk.GetArrayViewFromImage(wide.label)
    np.testing.assert_array_equal(label[inner], sitk.GetArrayViewFromImage(tight.label))
    outside = np.ones(label.shape, bool)
    outside[inner] = False
    assert not label[outside].any()
    for name, image in wide.maps.items():
        _assert_same_grid(image, padded)
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(image)[inner], sitk.GetArrayViewFromImage(tight.maps[name]),
                                   rtol=0, atol=1e-6)  # float32 round-off of two runs
        assert not sitk.GetArrayViewFromImage(image)[outside].any()
    # without the key the padded scan runs whole, and the network sees the zeros
    plain = install_random_model(tmp_path / "plain", tiny_card())[0]
    whole = segment(padded, plain.card("tiny-sipnet-mr"), plain, device="cpu")
    assert not np.array_equal(sitk.GetArrayViewFromImage(whole.maps["attention_1"])[inner],
                              sitk.GetArrayViewFromImage(tight.maps["attention_1"]))
