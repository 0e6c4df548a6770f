"""Side by side on a CUDA GPU: the engine's fast path against MONAI and against its own float32 run.

For every catalog model on one CT-sized volume (``--volume sample-ct``: the TotalSegmentator sample CT
resampled to 512 x 512 x 200 voxels of 0.8 x 0.8 x 2.0 mm, real anatomy where inference_speed.py's
``ct512`` is a drawn phantom; or a NIfTI path):

* ``ours``: ``Predictor.predict`` end to end (reading aside: resampling, normalisation, inference,
  mapping back to the input grid) on the engine's GPU defaults: bf16 autocast, channels-last,
  windows per batch chosen for the 8 GiB memory budget. Warm-up once, then ``--repeats`` timed runs.
* ``ours_fp32``: the same predictor with ``precision="float32"``: the reference for label agreement,
  run under PyTorch's FLOP counter, which gives the work of the whole pipeline (every network pass,
  cascade stages and RSTN's rounds included) and so the effective TFLOP/s of the fast path.
* ``monai``: ``monai.inferers.sliding_window_inference`` (3D) or ``SliceInferer`` (2D slice by slice,
  after the in-plane resize a 2D card asks for) on the preprocessed volume on the GPU, the network in
  float32 with ``sw_batch_size`` the card's batch, as its users run it; ``monai_amp`` the same under
  bf16 autocast. Their time is network plus stitching only. Cascades (RA-UNet) and RSTN's rounds have
  no MONAI counterpart.

Full-size cards without trained weights get seeded random weights (speed and agreement only); the
bundled left-atrium models run with their weights. ``--real`` adds a real scan on which the
agreement of trained models means something. Rows are JSON lines (``--json`` appends them as they
come, so a run stopped by ``--deadline-s`` keeps what finished).

    python benchmarks/gpu_vs_monai.py --json runs/gpu.jsonl
    python benchmarks/gpu_vs_monai.py --device cpu --size 40 40 24 --spacing 2 2 2.5 --models sipnet-left-atrium-mr
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from cpu_vs_monai import SHARED, dice, monai_runner
from MedSegAttentionLib.inference.engine import Predictor, _label_on_input_grid
from MedSegAttentionLib.inference.preprocessing import preprocess
from MedSegAttentionLib.modelstore.store import ModelStore
from MedSegAttentionLib.models import build_network
from rows import emit

CT_SAMPLE = SHARED / "TotalSegmentatorSamples" / "example_ct.nii.gz"


def ct_volume(size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float], source: Path = CT_SAMPLE) -> sitk.Image:
    """The sample CT resampled (linear, air outside) onto a centred grid of ``size_xyz`` voxels."""
    ct = sitk.ReadImage(str(source), sitk.sitkFloat32)
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    grid = sitk.Image([int(s) for s in size_xyz], sitk.sitkFloat32)
    grid.SetSpacing(spacing_xyz)
    grid.SetOrigin([c - (n - 1) * sp / 2 for c, n, sp in zip(centre, size_xyz, spacing_xyz)])
    volume = sitk.Resample(ct, grid, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.Cast(volume, sitk.sitkInt16)


def timed(fn, device: torch.device):  # noqa: ANN001, ANN201
    """(result, seconds, peak GPU bytes) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return out, time.perf_counter() - start, peak


def networks_for(card, store: ModelStore, device: torch.device) -> dict:  # noqa: ANN001
    """The card's installed (bundled) networks, else seeded random weights of its configuration."""
    if store.is_installed(card):
        return store.load_networks(card, device)
    torch.manual_seed(0)
    return {role: build_network(config) for role, config in card.networks.items()}


def compare(card, store: ModelStore, image: sitk.Image, device: torch.device, repeats: int,  # noqa: ANN001
            monai_amp: bool = True, compile: bool = False) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    base = networks_for(card, store, device)
    ours = Predictor(card, store, str(device), networks=copy.deepcopy(base), backend="pytorch", compile=compile)
    ref = Predictor(card, store, str(device), networks=copy.deepcopy(base), backend="pytorch", precision="float32")
    counter = FlopCounterMode(display=False)
    with counter:
        reference, ref_s, ref_peak = timed(lambda: ref.predict(image, maps=False), device)
    flops = counter.get_total_flops()
    warm_up = timed(lambda: ours.predict(image, maps=False), device)[1]  # cuDNN picks its kernels; compile compiles
    runs = [timed(lambda: ours.predict(image, maps=False), device) for _ in range(repeats)]
    result = runs[-1][0]
    seconds = [s for _, s, _ in runs]
    label, ref_label = sitk.GetArrayFromImage(result.label), sitk.GetArrayFromImage(reference.label)
    row = {"model": card.id, "input": list(image.GetSize()), "weights": "trained" if store.is_installed(card) else "random",
           "ours_min_s": round(min(seconds), 3), "ours_median_s": round(statistics.median(seconds), 3),
           "ours_inference_s": round(result.timings["inference"], 3),
           "ours_preprocess_s": round(result.timings["preprocess"], 3),
           "ours_postprocess_s": round(result.timings["postprocess"], 3),
           "ours_peak_gib": round(max(p for _, _, p in runs) / 2**30, 2), "ours_compiled": ours.compiled,
           "ours_first_run_s": round(warm_up, 2),
           "ours_fp32_s_with_counter": round(ref_s, 3), "ours_fp32_peak_gib": round(ref_peak / 2**30, 2),
           "tflop_per_run": round(flops / 1e12, 3),
           "effective_tflops_pipeline": round(flops / 1e12 / statistics.median(seconds), 1),
           "effective_tflops_inference": round(flops / 1e12 / result.timings["inference"], 1),
           "dice_ours_vs_fp32": round(dice(label, ref_label), 5),
           "foreground_fraction": round(float((ref_label > 0).mean()), 5),
           "warnings": result.warnings}
    if "main" in card.networks:
        array, grid = preprocess(image, card.preprocessing)
        volume = torch.from_numpy(array).to(device)
        net = base["main"].to(device).eval()
        for name, amp in (("monai", False), ("monai_amp", True))[:2 if device.type == "cuda" and monai_amp else 1]:  # CPU: no bf16
            runner = monai_runner(card, net, volume, int(card.inference.get("batch_size", 4)), amp)
            if runner is None:
                continue
            with torch.inference_mode():
                runner()  # warm-up
                probs, seconds_m, peak = timed(runner, device)
            row[f"{name}_s"], row[f"{name}_peak_gib"] = round(seconds_m, 3), round(peak / 2**30, 2)
            row[f"speedup_vs_{name}"] = round(seconds_m / statistics.median(seconds), 2)
            monai_label = sitk.GetArrayFromImage(_label_on_input_grid(probs.float().cpu().numpy(), grid, image, card))
            row[f"dice_ours_vs_{name}"] = round(dice(label, monai_label), 5)
            del probs
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", default="sample-ct", help="'sample-ct' (the resampled sample CT) or a NIfTI path")
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 200], help="x y z voxels of sample-ct")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 2.0], help="x y z mm of sample-ct")
    parser.add_argument("--ct", type=Path, default=CT_SAMPLE, help="the CT that sample-ct is resampled from")
    parser.add_argument("--models", nargs="*", help="catalog ids (default: every catalog model)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--monai-amp", action=argparse.BooleanOptionalAction, default=True,
                        help="also time MONAI under bf16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="ours with compile=True (its first run compiles)")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no model after this many seconds")
    parser.add_argument("--json", help="append each row to this JSON-lines file as it comes")
    args = parser.parse_args()
    device = torch.device(args.device)
    store = ModelStore()
    if args.volume == "sample-ct":
        image, case = ct_volume(tuple(args.size), tuple(args.spacing), args.ct), f"ct{'x'.join(map(str, args.size))}"
    else:
        image, case = sitk.ReadImage(args.volume), Path(args.volume).name
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {time.strftime('%Y-%m-%d')} {name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}",
          flush=True)
    models = args.models or [entry.card.id for entry in store.catalog()]
    start = time.perf_counter()
    for model_id in models:
        if args.deadline_s is not None and time.perf_counter() - start > args.deadline_s:
            row = {"model": model_id, "case": case, "skipped": "deadline"}
        else:
            try:
                row = {"case": case, "device": name, **compare(store.card(model_id), store, image, device, args.repeats, args.monai_amp, args.compile)}
            except Exception as error:  # noqa: BLE001 - one model failing must not lose the others' rows
                row = {"model": model_id, "case": case, "error": f"{type(error).__name__}: {error}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        emit(row, args.json)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
