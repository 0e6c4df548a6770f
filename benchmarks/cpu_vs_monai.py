"""Side by side on the CPU: the engine's whole pipeline against MONAI's network-plus-stitching time.

Same network, weights, volume, windows, overlap and Gaussian blending. MONAI runs as its users run it:
``monai.inferers.sliding_window_inference`` (3D) or ``SliceInferer`` (2D, slice by slice) on the
preprocessed volume, the network in PyTorch; its time is only the network and the stitching. Ours is
``Predictor.predict`` end to end (resampling, normalisation, inference, mapping back to the input grid)
with each backend (``openvino``: the engine's CPU default when installed; ``pytorch``). Repeats are
interleaved (MONAI, ours, ours, MONAI, ...) so that a change of machine load hits every column; min
and median are printed. Agreement: Dice of our label against MONAI's on the model grid, and Dice of
each against the ground truth when the case has one. Cascades (RA-UNet) and RSTN's rounds have no
MONAI counterpart: only our backends are timed. Where the engine plans one window over the whole
volume (a card's ``max_window_voxels``, :mod:`MedSegAttentionLib.inference.window_plan`), MONAI is
also timed with that window (``monai_planned``), so the gain of the planning and of the runtime show
apart; the speed-up is against MONAI with the card's windows, as its users would run it.

    python benchmarks/cpu_vs_monai.py --bundled --cases 3 --repeats 3          # bundled LA models
    python benchmarks/cpu_vs_monai.py --models sipnet-prostate-mr --volume prostate --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.engine import Predictor
from MedSegAttentionLib.inference.imageio import read_image
from MedSegAttentionLib.inference.openvino_backend import openvino_version
from MedSegAttentionLib.inference.preprocessing import preprocess
from MedSegAttentionLib.inference.sizes import patch_size_zyx, resize_in_plane, size_yx
from MedSegAttentionLib.inference.window_plan import plan_window
from MedSegAttentionLib.modelstore.store import ModelStore
from MedSegAttentionLib.models import build_network
from rows import emit

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLUMES = {"prostate": SHARED / "ProstateX-0000" / "t2_tse_tra.nii.gz",
           "ct20": SHARED / "TotalSegmentatorSamples" / "example_ct_dicom"}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def monai_runner(card, net: torch.nn.Module, volume: torch.Tensor, batch: int = 2, amp: bool = False,  # noqa: ANN001, ANN201
                 window: tuple[int, ...] | None = None):
    """A function giving MONAI's (K, z, y, x) probabilities for the card's window settings (or 3D
    ``window`` instead of the card's), or None: ``sliding_window_inference`` (3D) or ``SliceInferer``
    (2D, after the in-plane resize a card with ``slice_size`` asks for), ``batch`` windows or slices at
    a time, under bf16 autocast with ``amp``."""
    from monai.inferers import SliceInferer, sliding_window_inference

    inference = card.inference
    mode, overlap = inference["mode"], float(inference.get("overlap", 0.5))

    def network(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(volume.device.type, dtype=torch.bfloat16, enabled=amp):
            return torch.softmax(net(x).logits.float(), 1)

    if mode == "sliding_window":
        patch = window or patch_size_zyx(inference)
        blend = "gaussian" if inference.get("blend", "gaussian") == "gaussian" else "constant"
        return lambda: sliding_window_inference(volume[None], patch, batch, network, overlap=overlap, mode=blend,
                                                sigma_scale=0.125)[0]
    if mode == "slicewise" and not inference.get("slice_context"):
        size = size_yx(inference, "slice_size")

        def run() -> torch.Tensor:
            resized = resize_in_plane(volume, size)
            inferer = SliceInferer(roi_size=tuple(resized.shape[2:]), sw_batch_size=batch, spatial_dim=0, overlap=0.0)
            probs = inferer(resized[None], network)[0]
            return probs if size is None else resize_in_plane(probs, tuple(volume.shape[2:]))

        return run
    return None


def compare(card, store: ModelStore, image: sitk.Image, truth: np.ndarray | None, repeats: int,  # noqa: ANN001
            networks=None, backends=("openvino", "pytorch"), with_monai: bool = True) -> dict:  # noqa: ANN001
    array, grid = preprocess(image, card.preprocessing)
    volume = torch.from_numpy(array)
    predictors = {backend: Predictor(card, store, "cpu", networks=networks, backend=backend)
                  for backend in backends if backend == "pytorch" or openvino_version()}
    engine_net = next(iter(predictors.values())).networks.get("main")
    torch_net = None
    if engine_net is not None and with_monai:  # MONAI gets its own copy of the same (pruned) network, contiguous
        torch_net = build_network(engine_net.config).eval()
        torch_net.load_state_dict(engine_net.state_dict())
    planned = None  # the engine's window (sliding-window cards)
    if card.inference["mode"] == "sliding_window":
        planned = plan_window(volume.shape[1:], patch_size_zyx(card.inference), card.inference, engine_net.divisors())
    runners = {}
    if torch_net is not None:
        runners["monai"] = monai_runner(card, torch_net, volume)
        if planned is not None and planned != patch_size_zyx(card.inference):
            runners["monai_planned"] = monai_runner(card, torch_net, volume, window=planned)
    runners = {name: run for name, run in runners.items() if run is not None}
    monai = runners.get("monai")
    results, times = {}, {name: [] for name in [*predictors, *runners]}
    for backend, predictor in predictors.items():  # warm-up: OpenVINO converts or loads its model once
        results[backend] = predictor.predict(image, maps=False)
    monai_probs = None
    for _ in range(repeats):
        with torch.inference_mode():
            for name, run in runners.items():
                start = time.perf_counter()
                probs = run()
                times[name].append(time.perf_counter() - start)
                monai_probs = probs if name == "monai" else monai_probs
        for backend, predictor in predictors.items():
            start = time.perf_counter()
            results[backend] = predictor.predict(image, maps=False)
            times[backend].append(time.perf_counter() - start)
    row = {"model": card.id, "input": list(image.GetSize()), "model_grid": list(volume.shape[1:]),
           "window": list(planned) if planned is not None else None,
           "backends": {b: r.backend for b, r in results.items()}}
    for name, values in times.items():
        row[f"{name}_min_s"], row[f"{name}_median_s"] = round(min(values), 3), round(statistics.median(values), 3)
    if monai is not None:
        for backend in predictors:
            row[f"speedup_{backend}_vs_monai"] = round(row["monai_median_s"] / row[f"{backend}_median_s"], 2)
        from MedSegAttentionLib.inference.engine import _label_on_input_grid  # the engine's own mapping back

        monai_label = sitk.GetArrayFromImage(_label_on_input_grid(monai_probs.numpy(), grid, image, card))
        for backend, result in results.items():
            row[f"dice_{backend}_vs_monai"] = round(dice(sitk.GetArrayFromImage(result.label), monai_label), 5)
        if truth is not None:
            row["dice_monai_vs_truth"] = round(dice(monai_label, truth), 5)
    if truth is not None:
        for backend, result in results.items():
            row[f"dice_{backend}_vs_truth"] = round(dice(sitk.GetArrayFromImage(result.label), truth), 5)
    return row


def la_cases(count: int) -> list[tuple[Path, Path]]:
    """The first ``count`` fold-0 validation cases of the bundled models (split seed 12345), sorted by name."""
    from training.raw_dataset import load_dataset
    from training.splits import make_splits

    dataset = load_dataset(SHARED / "LeftAtrium2018")
    validation = sorted(make_splits(dataset.case_ids, 5, 12345)[0]["val"])[:count]
    return [(dataset.case(name).images[0], dataset.case(name).label) for name in validation]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundled", action="store_true", help="the bundled left-atrium models on LA validation cases")
    parser.add_argument("--models", nargs="*", default=[], help="catalog ids (full-size cards get seeded random weights)")
    parser.add_argument("--volume", choices=sorted(VOLUMES), help="the volume for --models")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["openvino", "pytorch"], choices=["openvino", "pytorch"])
    parser.add_argument("--no-monai", action="store_true", help="time our backends only")
    parser.add_argument("--json", help="append the rows to this JSON-lines file")
    args = parser.parse_args()
    store = ModelStore()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), openvino {openvino_version()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, load {os.getloadavg()[0]:.2f}")
    jobs = []
    if args.bundled:
        for image_path, label_path in la_cases(args.cases):
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
            for entry in store.catalog():
                if entry.card.id.endswith("left-atrium-mr") and store.is_installed(entry.card):
                    jobs.append((entry.card, read_image(image_path), truth, None, image_path.name))
    for model_id in args.models:
        card = store.card(model_id)
        torch.manual_seed(0)
        networks = {role: build_network(config) for role, config in card.networks.items()}
        jobs.append((card, read_image(VOLUMES[args.volume]), None, networks, args.volume))
    for card, image, truth, networks, case in jobs:
        row = {"case": case, **compare(card, store, image, truth, args.repeats, networks, args.backends, not args.no_monai)}
        emit(row, args.json)


if __name__ == "__main__":
    main()
