"""Make Resources/Screenshots/segmentation-and-attention.png: what the Slicer module shows after a run.

Everything goes through the module's own code outside Slicer, on a real MRML scene (slicer-core):

1. A real LGE-MR scan of LeftAtrium2018 (``../shared/data/LeftAtrium2018``), by default la_38cws742,
   the first fold-0 validation case: the bundled models did not train on it.
2. A bundled model (default ``sipnet-left-atrium-mr``, the product's default) run by the real
   ``medseg segment`` child process, driven by ``SegmentationRun`` from a fresh model store, and the
   result imported by ``import_result``: segments, heat-map volumes (stored as percent), Inferno
   display, legends.
3. An axial slice (the one with most atrium) rendered by Slicer's own slice pipeline
   (``vtkMRMLSliceLogic``: the input behind, the evidence map in front with the display node's
   colours, the module's "Hide below" threshold and opacity, the segment outline in the label layer),
   zoomed to the atrium, framed with matplotlib: title, colour legend, Dice against the expert label,
   note; saved as a 256-colour PNG.

Run (under a minute on two CPU cores)::

    python Testing/slicer/make_screenshot.py [--model ID] [--case la_...] [--map attention_3] [--hide-below 0.3] [--all-maps] [--out PATH]

Needs torch, MONAI, SimpleITK, slicer-core, matplotlib and ``../shared/data/LeftAtrium2018``.
"""

from __future__ import annotations

import argparse
import io
import textwrap
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LEFT_ATRIUM = REPO.parent / "shared" / "data" / "LeftAtrium2018"
DEFAULT_OUT = REPO / "Resources" / "Screenshots" / "segmentation-and-attention.png"
DEFAULT_CASE = "la_38cws742"  # first validation case of fold 0 (split seed 12345, docs/results.md)
_KEEP_ALIVE: list = []


# ------------------------------------------------------------------ 1. the case
def load_case(case: str) -> tuple[Path, np.ndarray, str]:
    """(image file, expert label (z, y, x) on its grid, where it comes from)."""
    image, label = LEFT_ATRIUM / "imagesTr" / f"{case}.nii.gz", LEFT_ATRIUM / "labelsTr" / f"{case}.nii.gz"
    if not (image.is_file() and label.is_file()):
        raise SystemExit(f"{case} is not in {LEFT_ATRIUM} (imagesTr/labelsTr): this picture needs the real scan")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(label))) > 0
    return image, truth, f"LeftAtrium2018 {case} (LGE-MR, a validation case the model did not train on)"


# ------------------------------------------------------------------ 3. the module's run
def new_scene():
    """A bare MRML scene with Slicer's default colour tables (Grey, Labels, ...), as the application starts."""
    import slicer

    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLScene(scene)
    _KEEP_ALIVE.append(color_logic)  # the tables leave the scene with their logic
    return scene


def run_in_scene(image_path: Path, model_id: str, workdir: Path):
    """The input as a volume node, a ``SegmentationRun`` through the real CLI from a fresh store, the imported result."""
    from MedSegAttentionLib.scene import load_volume
    from MedSegAttentionLib.scene.run import RunOptions, RunState, SegmentationRun

    scene = new_scene()
    volume = load_volume(scene, image_path, name="LGE-MR")
    run = SegmentationRun(scene, volume, RunOptions(model_id, device="cpu", model_dir=str(workdir / "store")),
                          work_root=workdir)
    run.start()
    if run.wait(timeout_s=1800) is not RunState.SUCCEEDED:
        raise SystemExit(f"the segmentation run failed: {run.message}\n" + "\n".join(run.runner.log if run.runner else []))
    return scene, volume, run.imported


# ------------------------------------------------------------------ 4. the picture
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
        self.labelmap = labelmap

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
           threshold: float | None = None, dice: float | None = None) -> Path:
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
    info = next(info for info in imported.description.maps if info.name == map_name)
    legend_title, label_format = heatmaps.legend_text(info.title, (low, high), info.unit)
    level = imported.description.level

    height, width = picture.shape[:2]
    fig = plt.figure(figsize=(7.6, 7.6 * height / width * 0.86 + 1.3), dpi=110, facecolor="#202020")
    ax = fig.add_axes((0.02, 0.13, 0.84, 0.74))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    segmentation = imported.segmentation_node.GetSegmentation()
    keys = [Patch(facecolor="none", edgecolor=segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetColor(),
                  linewidth=2, label=f"segment: {segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()}")
            for i in range(segmentation.GetNumberOfSegments())]
    ax.legend(handles=keys, loc="lower left", fontsize=8, framealpha=0.6)
    ax.text(0.01, 0.99, "R", color="white", transform=ax.transAxes, va="top", fontsize=9)
    ax.text(0.99, 0.99, "L", color="white", transform=ax.transAxes, va="top", ha="right", fontsize=9)

    bar = fig.add_axes((0.88, 0.2, 0.035, 0.6))
    colors = legend_colors(map_node)
    bar.imshow(colors[::-1, None, :], aspect="auto", extent=(0, 1, low, high), cmap=ListedColormap(colors))
    bar.add_patch(Rectangle((0, low), 1, threshold - low, facecolor="#202020", edgecolor="white", hatch="////", linewidth=0))
    bar.set_xticks([])
    bar.set_ylim(low, high)
    bar.tick_params(colors="white", labelsize=8)
    bar.set_title(f"{label_format % low} - {label_format % high}", color="white", fontsize=8)
    bar.text(1.6, threshold / 2, "transparent", color="white", fontsize=7, rotation=90, va="bottom",
             transform=bar.get_yaxis_transform())

    fig.text(0.02, 0.975, f"{imported.description.model_title}{f' (pruned to {level})' if level else ''}",
             color="white", fontsize=11, weight="bold", va="top")
    fig.text(0.02, 0.94, "heat map: " + "\n".join(textwrap.wrap(legend_title, 105)), color="#dddddd", fontsize=8, va="top")
    accuracy = f"; Dice {dice:.3f} against the expert label" if dice is not None else ""
    fig.text(0.02, 0.085, f"Input: {source}{accuracy}.\nHeat map below {label_format % threshold} transparent, "
             f"opacity {opacity:.1f}.", color="#bbbbbb", fontsize=7, va="center")
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
    parser.add_argument("--model", default="sipnet-left-atrium-mr", help="a bundled left-atrium model")
    parser.add_argument("--case", default=DEFAULT_CASE, help="a LeftAtrium2018 case")
    parser.add_argument("--all-maps", action="store_true", help="also write one picture per map (OUT-<map>.png)")
    parser.add_argument("--map", default="attention_3", help="which evidence map to show")
    parser.add_argument("--hide-below", type=float, default=0.3, help="the module's 'Hide below' setting (fraction of the range)")
    args = parser.parse_args(argv)
    image, truth, source = load_case(args.case)
    with tempfile.TemporaryDirectory(prefix="medseg-screenshot-") as tmp:
        scene, volume, imported = run_in_scene(image, args.model, Path(tmp))
        view = SliceView(scene, volume, imported)
        predicted = _array(view.labelmap.GetImageData())[..., 0] > 0
        dice = 2.0 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum())
        out = render(view, imported, args.map, args.out, source, threshold=args.hide_below, dice=dice)
        for name in imported.map_nodes if args.all_maps else []:
            render(view, imported, name, args.out.with_name(f"{args.out.stem}-{name}.png"), source,
                   threshold=args.hide_below, dice=dice)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB), Dice {dice:.3f}")
    return out


if __name__ == "__main__":
    main()
