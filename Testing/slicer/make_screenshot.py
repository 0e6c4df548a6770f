"""Make Resources/Screenshots/segmentation-and-attention.png: what the Slicer module shows after a run.

Everything goes through the module's own code outside Slicer, on a real MRML scene (slicer-core):

1. A real abdominal CT (``../shared/data/TotalSegmentatorSamples/example_ct_dicom``, 512 x 512 x 20)
   or, when that folder is absent, a synthetic CT phantom.
2. An ANU-Net (the catalog card's architecture, 8-128 filters, 4 mm in-plane) fitted for a few
   minutes to this one scan's liver label (TotalSegmentator's) with the paper's loss, installed as a
   user card. Demonstration weights only: no validated model is shipped, and a random-weight network
   would show nothing worth looking at.
3. The real ``medseg segment`` child process (pruned to L3), driven by ``SegmentationRun``, and the
   result imported by ``import_result``: segments, heat-map volumes, Inferno display, legends.
4. An axial slice (the one with most liver) rendered by Slicer's own slice pipeline
   (``vtkMRMLSliceLogic``: the input behind in an abdominal window, the attention map in front with
   the display node's colours, window 0-1, the module's "Hide below" threshold and opacity, the
   segment outline in the label layer), framed with matplotlib: title, colour legend, note; saved
   as a 256-colour PNG.

Run (about five minutes on two CPU cores; ``--workdir`` keeps the fitted model for the next run)::

    python Testing/slicer/make_screenshot.py [--map attention_x0_2] [--hide-below 0.5] [--all-maps] [--out PATH]

Needs torch, MONAI, SimpleITK, slicer-core and matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED_CT = REPO.parent / "shared" / "data" / "TotalSegmentatorSamples"
DEFAULT_OUT = REPO / "Resources" / "Screenshots" / "segmentation-and-attention.png"
LIVER_LABEL = 5  # TotalSegmentator "total" task
DEMO_ID = "anunet-liver-ct-demo"
OUTLINE_RGB = (0.25, 0.95, 0.45)  # the demo card's liver colour: stands out against Inferno
_KEEP_ALIVE: list = []


# ------------------------------------------------------------------ 1. the case
def load_case() -> tuple[sitk.Image, np.ndarray, str]:
    """(CT image, liver mask (z, y, x) on its grid, where it comes from)."""
    dicom, labels = SHARED_CT / "example_ct_dicom", SHARED_CT / "example_seg_dicom.nii.gz"
    if dicom.is_dir() and labels.is_file():
        from MedSegAttentionLib.inference.imageio import read_image

        image = read_image(dicom)
        label = sitk.Resample(sitk.ReadImage(str(labels)), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        return image, sitk.GetArrayFromImage(label) == LIVER_LABEL, "real CT (TotalSegmentator sample, Apache-2.0)"
    sys.path.insert(0, str(REPO / "Testing"))
    from volumes import phantom_volume

    image, label = phantom_volume(size_zyx=(12, 160, 160), spacing_xyz=(1.0, 1.0, 2.5), modality="CT", oblique=False)
    return image, label > 0, "synthetic CT phantom (../shared/data absent)"


# ------------------------------------------------------------------ 2. demonstration weights
def demo_card(spacing_mm: float) -> dict[str, Any]:
    """The catalog ANU-Net card, slimmer (8..128 filters) and at ``spacing_mm`` in-plane, as a user-installed card."""
    from MedSegAttentionLib.modelstore.cards import builtin_cards

    card = copy.deepcopy(dict(next(c for c in builtin_cards() if c.id == "anunet-liver-ct").data))
    card["id"], card["title"] = DEMO_ID, "ANU-Net liver (CT), demonstration weights"
    card["preprocessing"]["target_spacing"] = [spacing_mm, spacing_mm, 2.0]
    card["labels"][0]["color"] = list(OUTLINE_RGB)
    card["networks"]["main"]["config"]["features"] = [8, 16, 32, 64, 128]
    return card


def fit(card: dict[str, Any], image: sitk.Image, mask: np.ndarray, steps: int, batch: int = 4):
    """Fit the card's network to one scan (whole slices of the model grid, ANU-Net's hybrid loss, Eq. 8)."""
    import torch

    from MedSegAttentionLib.modelstore.cards import ModelCard
    from MedSegAttentionLib.models import build_network
    from MedSegAttentionLib.inference.preprocessing import preprocess
    from training.losses import build_loss

    spec = ModelCard.from_dict(card).preprocessing
    array, grid = preprocess(image, spec)
    label_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    label_image.CopyInformation(image)
    target = sitk.GetArrayFromImage(sitk.Resample(label_image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = build_network(card["networks"]["main"]["config"]).train()
    loss_fn = build_loss("anunet")
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(steps):
        slices = rng.choice(target.shape[0], size=min(batch, target.shape[0]), replace=False)
        x = torch.from_numpy(np.ascontiguousarray(array[:, slices].swapaxes(0, 1)))
        loss = loss_fn(net(x), torch.from_numpy(target[slices].astype(np.int64)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"fit step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    return net.eval()


def install(card: dict[str, Any], net, workdir: Path) -> Path:  # noqa: ANN001
    """Export (safetensors + card with its SHA-256) and install like ``medseg install-weights --card``."""
    from MedSegAttentionLib.modelstore.export import export_model
    from MedSegAttentionLib.modelstore.store import ModelStore

    card_path, weights_path = export_model(card, {"main": net}, workdir / "export",
                                           provenance={"note": "fitted to one scan by make_screenshot.py"})
    store = ModelStore(workdir / "store")
    store.install_card(card_path, weights_path)
    return store.root


# ------------------------------------------------------------------ 3. the module's run
def new_scene():
    """A bare MRML scene with Slicer's default colour tables (Grey, Labels, ...), as the application starts."""
    import slicer

    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLScene(scene)
    _KEEP_ALIVE.append(color_logic)  # the tables leave the scene with their logic
    return scene


def run_in_scene(image: sitk.Image, store_root: Path, level: str, workdir: Path):
    """The input as a volume node, a ``SegmentationRun`` through the real CLI, the imported result."""
    import slicer

    from MedSegAttentionLib.scene import load_volume
    from MedSegAttentionLib.scene.run import RunOptions, RunState, SegmentationRun

    path = workdir / "abdomen.nrrd"
    sitk.WriteImage(image, str(path))
    scene = new_scene()
    volume = load_volume(scene, path, name="CT abdomen")
    run = SegmentationRun(scene, volume, RunOptions(DEMO_ID, device="auto", level=level, model_dir=str(store_root)),
                          work_root=workdir)
    run.start()
    if run.wait(timeout_s=1800) is not RunState.SUCCEEDED:
        raise SystemExit(f"the segmentation run failed: {run.message}\n" + "\n".join(run.runner.log if run.runner else []))
    return scene, volume, run.imported


# ------------------------------------------------------------------ 4. the picture
def abdominal_window(volume, window: float = 400.0, level: float = 40.0) -> None:  # noqa: ANN001
    """The soft-tissue window a radiologist picks for abdominal CT (Slicer's "CT-Abdomen" preset)."""
    display = volume.GetScalarVolumeDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)


def _array(image_data) -> np.ndarray:  # noqa: ANN001
    from vtk.util import numpy_support

    dims = image_data.GetDimensions()
    values = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    return values.reshape(dims[2], dims[1], dims[0], -1)


def busiest_axial_offset(labelmap) -> float:  # noqa: ANN001
    """RAS S coordinate of the centre of the label-map plane with most segmented voxels (middle if none)."""
    from MedSegAttentionLib.scene import ijk_to_ras_array

    labels = _array(labelmap.GetImageData())[..., 0] > 0
    counts = labels.sum(axis=(1, 2))
    k = int(np.argmax(counts)) if counts.any() else len(counts) // 2
    j, i = np.nonzero(labels[k]) if counts.any() else (np.array([labels.shape[1] / 2]), np.array([labels.shape[2] / 2]))
    extent = labelmap.GetImageData().GetExtent()
    ijk = np.array([extent[0] + i.mean(), extent[2] + j.mean(), extent[4] + k, 1.0])
    return float((ijk_to_ras_array(labelmap) @ ijk)[2])


def segment_color_table(scene, segmentation_node):  # noqa: ANN001
    """Label value i -> colour of the i-th segment (the order the export numbers them in), 0 clear."""
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetNumberOfColors(segmentation.GetNumberOfSegments() + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(index))
        table.SetColor(index + 1, segment.GetName(), *segment.GetColor(), 1.0)
    scene.AddNode(table)
    return table


class SliceView:
    """An axial slice view ("Red") on a bare MRML scene, composed by the slice logic Slicer's views use:
    the input behind, a map in front (set by the module's own map switch), the segments as label outlines."""

    def __init__(self, scene, volume, imported, size: int = 560) -> None:  # noqa: ANN001
        import slicer

        self.scene, self.volume = scene, volume
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # the application does this at start-up
        slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")  # created with the default presets
        slice_node.SetLayoutName("Red")
        slice_node.SetOrientationToAxial()
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName("Red")
        scene.AddNode(composite)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetSliceNode(slice_node)

        labelmap = slicer.vtkMRMLLabelMapVolumeNode()
        scene.AddNode(labelmap)
        slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(imported.segmentation_node, labelmap, volume)
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(segment_color_table(scene, imported.segmentation_node).GetID())
        composite.SetLabelVolumeID(labelmap.GetID())
        composite.SetLabelOpacity(1.0)
        slice_node.SetUseLabelOutline(True)

        dims, spacing = volume.GetImageData().GetDimensions(), volume.GetSpacing()
        aspect = (dims[1] * spacing[1]) / (dims[0] * spacing[0])
        slice_node.SetDimensions(size, max(16, int(round(size * aspect))), 1)
        composite.SetBackgroundVolumeID(volume.GetID())
        self.logic.FitSliceToAll()
        self.logic.SetSliceOffset(busiest_axial_offset(labelmap))

    def image(self, map_node, opacity: float) -> np.ndarray:  # noqa: ANN001
        """The blended slice (RGB, top row first) with ``map_node`` (or none) in front."""
        from MedSegAttentionLib.scene import heatmaps

        heatmaps.show_map_in_slice_views(self.scene, map_node, self.volume, opacity)  # the module's map selector
        producer = self.logic.GetImageDataConnection().GetProducer()
        producer.Update()
        return _array(producer.GetOutputDataObject(0))[0][::-1, :, :3]  # VTK rows run bottom-up


def legend_colors(map_node) -> np.ndarray:  # noqa: ANN001
    """The map's colour table (the one the display node uses), as N x 3 floats."""
    color_node = map_node.GetDisplayNode().GetColorNode()
    rgba = [0.0] * 4
    rows = []
    for index in range(color_node.GetNumberOfColors()):
        color_node.GetColor(index, rgba)
        rows.append(rgba[:3])
    return np.array(rows)


def render(view: SliceView, imported, map_name: str, out: Path, source: str, opacity: float = 0.6,  # noqa: ANN001
           threshold: float | None = None) -> Path:
    """The framed PNG (256 colours): slice view, segment key, colour legend (transparent part hatched), caption.

    ``threshold`` is the module's "Hide below" slider (None: the import default)."""
    from MedSegAttentionLib.scene import heatmaps

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    map_node = imported.map_nodes[map_name]
    if threshold is not None:
        heatmaps.set_map_threshold(view.scene, threshold)
    picture = view.image(map_node, opacity)
    display = map_node.GetScalarVolumeDisplayNode()
    low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    threshold = display.GetLowerThreshold()
    title = next(info.title for info in imported.description.maps if info.name == map_name)
    level = imported.description.level

    height, width = picture.shape[:2]
    fig = plt.figure(figsize=(7.6, 7.6 * height / width * 0.86 + 1.3), dpi=110, facecolor="#202020")
    ax = fig.add_axes((0.02, 0.13, 0.84, 0.78))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    segmentation = imported.segmentation_node.GetSegmentation()
    keys = [Patch(facecolor="none", edgecolor=segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetColor(),
                  linewidth=2, label=f"segment: {segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()}")
            for i in range(segmentation.GetNumberOfSegments())]
    ax.legend(handles=keys, loc="lower left", fontsize=8, framealpha=0.6)
    ax.text(0.01, 0.99, "R", color="white", transform=ax.transAxes, va="top", fontsize=9)
    ax.text(0.99, 0.99, "L", color="white", transform=ax.transAxes, va="top", ha="right", fontsize=9)

    bar = fig.add_axes((0.88, 0.2, 0.035, 0.64))
    colors = legend_colors(map_node)
    bar.imshow(colors[::-1, None, :], aspect="auto", extent=(0, 1, low, high), cmap=ListedColormap(colors))
    bar.add_patch(Rectangle((0, low), 1, threshold - low, facecolor="#202020", edgecolor="white", hatch="////", linewidth=0))
    bar.set_xticks([])
    bar.set_ylim(low, high)
    bar.tick_params(colors="white", labelsize=8)
    bar.set_title("%.1f-%.1f" % (low, high), color="white", fontsize=8)
    bar.text(1.6, threshold / 2, "transparent", color="white", fontsize=7, rotation=90, va="bottom",
             transform=bar.get_yaxis_transform())

    fig.text(0.02, 0.955, f"{imported.description.model_title}{f' (pruned to {level})' if level else ''}",
             color="white", fontsize=11, weight="bold")
    fig.text(0.02, 0.925, f"heat map: {title}; below {threshold:.2f} transparent, opacity {opacity:.1f}",
             color="#dddddd", fontsize=9)
    fig.text(0.02, 0.075, f"Input: {source}. Weights fitted to this one scan for the picture; not a validated model.",
             color="#bbbbbb", fontsize=7)
    fig.text(0.02, 0.04, "Rendered by Testing/slicer/make_screenshot.py with Slicer's slice pipeline (slicer-core MRML)"
             " from the module's own run and import code.", color="#bbbbbb", fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, facecolor=fig.get_facecolor())
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE)  # small enough to commit
    picture.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=300, help="fitting steps for the demonstration weights")
    parser.add_argument("--spacing", type=float, default=4.0, help="the demonstration model's in-plane spacing (mm)")
    parser.add_argument("--workdir", type=Path, help="keep the fitted model here and reuse it next time")
    parser.add_argument("--all-maps", action="store_true", help="also write one picture per map (OUT-<map>.png)")
    parser.add_argument("--level", default="L3", choices=["L1", "L2", "L3", "L4"])
    parser.add_argument("--map", default="attention_x0_1", help="which evidence map to show")
    parser.add_argument("--hide-below", type=float, default=0.68, help="the module's 'Hide below' setting for the map")
    args = parser.parse_args(argv)
    image, mask, source = load_case()
    with tempfile.TemporaryDirectory(prefix="medseg-screenshot-") as tmp:
        workdir = args.workdir or Path(tmp)
        store_root = workdir / "store"
        if (store_root / "cards" / f"{DEMO_ID}.json").is_file():
            print(f"reusing the model fitted before in {store_root}")
        else:
            card = demo_card(args.spacing)
            store_root = install(card, fit(card, image, mask, args.steps), workdir)
        scene, volume, imported = run_in_scene(image, store_root, args.level, workdir)
        abdominal_window(volume)
        view = SliceView(scene, volume, imported)
        out = render(view, imported, args.map, args.out, source, threshold=args.hide_below)
        for name in imported.map_nodes if args.all_maps else []:
            render(view, imported, name, args.out.with_name(f"{args.out.stem}-{name}.png"), source, threshold=args.hide_below)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return out


if __name__ == "__main__":
    main()
