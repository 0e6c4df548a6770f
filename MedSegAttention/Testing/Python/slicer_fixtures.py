"""Test data of the Slicer scene scenarios: an oblique, anisotropic input volume and a result folder
(docs/result-format.md) with two labels and two maps, plus geometry helpers. Shared by the CI tests
(slicer-core) and the module's self-test inside Slicer; needs SimpleITK and numpy, which Slicer ships.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from MedSegAttentionLib.scene import load_volume

SIZE = (14, 11, 7)  # x, y, z (I, J, K)
SPACING = (0.7, 1.3, 3.1)
ORIGIN = (-12.5, 31.0, 7.25)
LABELS = [
    {"value": 1, "name": "liver", "color": [0.87, 0.51, 0.39],
     "terminology": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                     "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}}},
    {"value": 3, "name": "liver tumour", "color": [0.2, 0.8, 0.3],
     "terminology": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
                     "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"}}},
]
MAPS = [("attention_1", "AFM attention mask 1 (deepest)"), ("saliency", "Saliency weights")]


def oblique_direction() -> tuple[float, ...]:
    """A proper rotation about a tilted axis: no axis of it is aligned with LPS."""
    a, b, c = math.radians(25), math.radians(-17), math.radians(40)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx).ravel())


def write_input(path: Path) -> sitk.Image:
    """An oblique, anisotropic float32 volume with an asymmetric pattern (flips would show)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(SIZE)), indexing="ij")
    array = (i * 1.0 + j * 10.0 + k * 100.0).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(oblique_direction())
    sitk.WriteImage(image, str(path))
    return image


def label_array() -> np.ndarray:
    """Label map (K, J, I): label 1 in a corner block, label 3 inside it, away from the centre."""
    labels = np.zeros(tuple(reversed(SIZE)), dtype=np.uint8)
    labels[1:4, 2:8, 1:9] = 1
    labels[2:3, 3:5, 2:4] = 3
    return labels


def map_array(index: int) -> np.ndarray:
    """A [0, 1] ramp along I (map 0) or J (map 1), float32."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(SIZE)), indexing="ij")
    ramp = i / (SIZE[0] - 1) if index == 0 else j / (SIZE[1] - 1)
    return ramp.astype(np.float32)


def write_result_folder(folder: Path, input_image: sitk.Image, bad_map: bool = False) -> Path:
    """A result folder per docs/result-format.md on the input grid; ``bad_map`` puts the last map off-grid."""
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    seg = sitk.GetImageFromArray(label_array())
    seg.CopyInformation(input_image)
    sitk.WriteImage(seg, str(folder / "segmentation.nrrd"), True)
    maps = []
    for index, (name, title) in enumerate(MAPS):
        image = sitk.GetImageFromArray(map_array(index))
        image.CopyInformation(input_image)
        if bad_map and index == len(MAPS) - 1:
            image.SetOrigin(tuple(o + 5.0 for o in ORIGIN))
        sitk.WriteImage(image, str(folder / "maps" / f"{name}.nrrd"), True)
        maps.append({"name": name, "file": f"maps/{name}.nrrd", "title": title, "kind": "attention"})
    meta = {
        "format_version": 1,
        "model": {"id": "raunet-liver-ct", "title": "RA-UNet liver (CT)", "level": None},
        "input": {"path": "input.nrrd", "size": list(SIZE), "spacing": list(SPACING)},
        "segmentation": "segmentation.nrrd",
        "labels": LABELS,
        "maps": maps,
        "device": "cpu",
        "warnings": ["test warning"],
        "timings": {"read": 0.0},
    }
    (folder / "result.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return folder


def expected_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """IJK-to-RAS computed from the file's LPS geometry by hand: RAS = diag(-1, -1, 1) LPS."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag([-1, -1, 1]) @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = np.diag([-1, -1, 1]) @ np.array(image.GetOrigin())
    return matrix


def scene_node_ids(scene: "slicer.vtkMRMLScene") -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-5) -> None:
    if not np.allclose(actual, expected, atol=tol):
        raise AssertionError(f"{what}:\n{np.round(actual, 5)}\n!=\n{np.round(expected, 5)}")


def _setup_input(scene: "slicer.vtkMRMLScene", workdir: Path) -> tuple["slicer.vtkMRMLScalarVolumeNode", sitk.Image, int]:
    """Input volume under Patient/Study in the subject hierarchy (as after DICOM import)."""
    workdir.mkdir(parents=True, exist_ok=True)
    image = write_input(workdir / "input.nrrd")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Test patient")
    study = sh.CreateStudyItem(patient, "Test study")
    volume = load_volume(scene, workdir / "input.nrrd", name="CT abdomen")
    item = sh.GetItemByDataNode(volume)
    if item:
        sh.SetItemParent(item, study)
    else:
        sh.CreateItem(study, volume)
    return volume, image, study


# ---------------------------------------------------------------------------------- scenarios
