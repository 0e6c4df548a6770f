"""The ``medseg`` command line: list models, install weights, segment images (one, a folder, sharded).

Exit codes and the machine-readable progress lines are documented in docs/result-format.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from .choices import BACKEND_CHOICES, DEVICE_CHOICES, PRUNING_LEVELS
from .errors import InputError, MedSegError, ModelError
from .inference.imageio import IMAGE_SUFFIXES, is_image_file
from .protocol import EXIT_BUG, EXIT_OK, format_line


class Reporter:
    """Progress output: a tqdm bar for people, one JSON line per step for programs, or nothing."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._bar = None

    def emit(self, kind: str, **payload: object) -> None:
        if self.mode == "machine":
            print(format_line(kind, payload), flush=True)
        elif kind == "info" and self.mode == "bar":
            self.close()
            print(payload.get("message"), file=sys.stderr, flush=True)
        elif kind in ("warning", "error"):
            self.close()
            print(f"{kind}: {payload.get('message')}", file=sys.stderr, flush=True)
        elif kind == "result" and self.mode == "bar":
            self.close()
            print(f"wrote {payload['output_dir']}", flush=True)

    def progress(self, fraction: float, message: str) -> None:
        if self.mode == "machine":
            self.emit("progress", fraction=round(fraction, 4), message=message)
        elif self.mode == "bar":
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", file=sys.stderr)
            self._bar.set_description_str(message[:40].ljust(40))
            self._bar.update(int(fraction * 1000) - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__)
    parser.add_argument("--model-dir", help="model store folder (default: $MEDSEG_MODEL_DIR or the user cache)")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the model catalog and what is installed")
    models.add_argument("--json", action="store_true", help="machine-readable output")

    install = sub.add_parser("install-weights", help="install verified weights (file or explicit download)")
    install.add_argument("weights", nargs="?", help="a .safetensors file")
    install.add_argument("--model", help="id of a catalog model whose card lists the weights' SHA-256")
    install.add_argument("--card", help="a model card JSON that comes with the weights (e.g. from training)")
    install.add_argument("--download", action="store_true", help="download the card's weights URL (or --url)")
    install.add_argument("--url", help="download from this URL instead of the card's")

    devices = sub.add_parser("devices", help="what this Python can compute on (torch, CUDA GPUs, MPS)")
    devices.add_argument("--json", action="store_true", help="one machine line: medseg-devices {...}")

    levels = sub.add_parser("levels", help="parameters and measured ms per slice of each pruning level (ANU-Net)")
    levels.add_argument("--model", required=True, help="id of a prunable model (catalog or installed card)")
    levels.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    levels.add_argument("--slices", type=int, help="slices in the timed volume (default: 8 on a GPU, 2 on the CPU)")
    levels.add_argument("--slice-size", type=int, default=512, help="slice width and height in voxels")
    levels.set_defaults(progress_format="machine")  # a child of the Slicer module: errors as medseg-error lines

    seg = sub.add_parser("segment", help="segment images: a file, a DICOM folder, or a folder of images")
    seg.add_argument("inputs", nargs="+", help="image file(s) (NIfTI/NRRD/MHA), DICOM series folder(s), or a folder of image files")
    seg.add_argument("--model", required=True, help="model id (see 'medseg models')")
    seg.add_argument("--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} (auto: CUDA, else MPS, else CPU); "
                     "cuda:N picks one GPU")
    seg.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                     help="what runs the networks on the CPU: auto (OpenVINO when installed, else PyTorch), "
                          "pytorch or openvino; GPUs run PyTorch")
    seg.add_argument("--output-dir", default="medseg-output", help="results go to OUTPUT_DIR/<case name>/")
    seg.add_argument("--maps", default="all", help="'all', 'none' or a comma-separated list of map names")
    seg.add_argument("--map-storage", choices=["float32", "percent"], default="float32",
                     help="maps as float32 (default), or maps with values in [0, 1] as whole percent in one byte "
                          "(a quarter of the size; the Slicer module's choice)")
    seg.add_argument("--level", choices=PRUNING_LEVELS, help="ANU-Net pruning level")
    seg.add_argument("--batch-size", type=int, help="windows or slices per batch (default from the model card)")
    seg.add_argument("--compile", action="store_true",
                     help="CUDA: compile the networks (torch.compile) before the first case; it costs 20-40 s once and "
                          "then runs the 3D networks up to 2.8x faster, so it pays for a batch of cases")
    seg.add_argument("--montage", dest="montage", action="store_true", default=True, help="write overlay.png (default)")
    seg.add_argument("--no-montage", dest="montage", action="store_false")
    seg.add_argument("--tta", dest="tta", action="store_true", default=None,
                     help="test-time mirroring: average the mirrored predictions, add the uncertainty map "
                          "(default: as the model card says)")
    seg.add_argument("--no-tta", dest="tta", action="store_false", help="one pass, no mirroring")
    seg.add_argument("--inference", action="append", default=[], metavar="KEY=VALUE",
                     help="change one of the card's inference settings for this run (repeatable; VALUE is JSON), "
                          "e.g. blend=\"constant\" or largest_component=false to switch off a step the paper lacks")
    seg.add_argument("--overwrite", action="store_true", help="replace existing result folders")
    seg.add_argument("--progress-format", choices=["bar", "machine", "none"], default="bar")
    return parser


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files and DICOM folders as given; a folder of image files becomes its files (batch mode)."""
    cases: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_file(p))
            cases.extend(files if files else [path])
        elif path.exists():
            cases.append(path)
        else:
            raise InputError(f"input not found: {path}")
    return cases


def case_name(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _shard(cases: list[Path]) -> tuple[list[Path], str | None]:
    """Under torchrun (WORLD_SIZE > 1) each rank takes every WORLD_SIZE-th case, on its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return cases, None
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    return cases[rank::world], f"cuda:{local_rank}"


def cmd_models(args: argparse.Namespace, store) -> int:  # noqa: ANN001
    entries = store.catalog()
    if args.json:
        print(json.dumps([_model_entry(e, store) for e in entries], indent=2))
        return EXIT_OK
    print(f"model store: {store.root}")
    for e in entries:
        state = ("bundled" if store.is_bundled(e.card) else "installed") if e.installed else "not installed"
        print(f"  {e.card.id:28s} {state:14s} {e.card.title}")
        if not e.installed:
            print(f"  {'':28s} -> {e.how_to_install}")
    return EXIT_OK


def _model_entry(entry, store) -> dict:  # noqa: ANN001
    """What the Slicer model list shows of a catalog entry: state, how to install, and the card's facts."""
    card = entry.card
    provenance = (card.weights or {}).get("provenance") or {}
    validations = provenance.get("validation") or {}
    validation = validations.get("main") or {}  # training-time figures (per level for ANU-Net)
    measured = validations.get("engine") or validation  # through the engine as users run it, when recorded
    return {
        "id": card.id, "title": card.title, "installed": entry.installed, "origin": entry.origin,
        "bundled": store.is_bundled(card), "how_to_install": entry.how_to_install,
        "levels": list(card.inference.get("levels") or []),
        "level_dice": {level: row.get("mean_dice") for level, row in (validation.get("levels") or {}).items()},
        "modality": card.modality, "description": card.description, "paper": dict(card.paper),
        "labels": [label["name"] for label in card.labels], "maps": [m["title"] for m in card.maps], "map_names": [m["name"] for m in card.maps],
        "map_ranges": [m.get("range", [0.0, 1.0]) for m in card.maps],
        "parameters": _parameter_count(card),
        "validation": {"mean_dice": measured.get("mean_dice"), "cases": measured.get("cases"),
                       "data": provenance.get("data"), "through_engine": "engine" in validations} if measured else None,
        "license": card.license,
    }


def _parameter_count(card) -> int | None:  # noqa: ANN001
    """Parameters of the card's networks, counted on the meta device (no memory, no weights needed)."""
    try:
        from .models import count_config_parameters

        return count_config_parameters(card.networks.values())
    except Exception:  # noqa: BLE001 - a fact for a tooltip, never a reason to fail the listing
        return None


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        from .inference.devices import device_report

        info = device_report()
    except ImportError as exc:  # torch not installed (yet): the Slicer module offers the install
        info = {"torch": None, "cuda": [], "mps": False, "error": f"{type(exc).__name__}: {exc}"}
    if args.json:
        print(format_line("devices", info), flush=True)
    else:
        gpus = ", ".join(f"cuda:{g['index']} {g['name']} ({g['memory_gib']} GiB)" for g in info["cuda"]) or "no CUDA GPU"
        print(f"torch {info['torch']}: {gpus}; MPS {'available' if info['mps'] else 'not available'}")
    return EXIT_OK


def cmd_levels(args: argparse.Namespace, store) -> int:  # noqa: ANN001
    import torch

    from .protocol import emit
    from .slicer_support.level_speed import measure

    slices = args.slices if args.slices is not None else (8 if args.device != "cpu" and torch.cuda.is_available() else 2)
    if slices < 2 or args.slice_size < 16:
        raise InputError("--slices must be at least 2 and --slice-size at least 16")
    measure(store.card(args.model), args.device, slices, args.slice_size, emit, store)
    return EXIT_OK


def cmd_install(args: argparse.Namespace, store) -> int:  # noqa: ANN001
    if args.card:
        if not args.weights:
            raise InputError("--card needs the weights file next to it: medseg install-weights --card CARD.json FILE")
        card = store.install_card(args.card, args.weights)
    elif args.model and (args.download or args.url):
        from tqdm import tqdm

        with tqdm(unit="B", unit_scale=True, desc="download", file=sys.stderr) as bar:
            card = store.download_weights(args.model, args.url, progress=lambda done, total: (setattr(bar, "total", total or None), bar.update(done - bar.n)))
    elif args.model and args.weights:
        card = store.install_weights(args.model, args.weights)
    else:
        raise InputError("say what to install: --model ID FILE, --card CARD.json FILE, or --model ID --download")
    print(f"installed {card.id} into {store.root}")
    return EXIT_OK


def cmd_segment(args: argparse.Namespace, store, reporter: Reporter, cancel_event: threading.Event) -> int:  # noqa: ANN001
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    card = with_inference_settings(store.card(args.model), args.inference)
    maps: bool | list[str] = True if args.maps == "all" else False if args.maps == "none" else [m for m in args.maps.split(",") if m]
    cases, shard_device = _shard(expand_inputs(args.inputs))
    device = shard_device if shard_device and args.device == "auto" else args.device
    from .inference.engine import Predictor

    predictor = Predictor(card, store, device, level=args.level, batch_size=args.batch_size, tta=args.tta,
                          backend=args.backend, compile=args.compile)
    names = [case_name(c) for c in cases]
    if len(set(names)) != len(names):
        raise InputError("two inputs share a case name; give them distinct names or run them separately")
    failures: list[tuple[str, InputError]] = []
    for index, (case, name) in enumerate(zip(cases, names)):
        try:
            _segment_case(args, predictor, maps, reporter, cancel_event, case, name, index, len(cases))
        except InputError as exc:  # a bad case: say so, go on with the others (the model itself is fine)
            if len(cases) == 1:
                raise
            failures.append((name, exc))
            reporter.emit("warning", message=f"{name}: not segmented: {exc}")
    if failures:
        listing = "; ".join(f"{name}: {exc}" for name, exc in failures)
        raise InputError(f"{len(failures)} of {len(cases)} case(s) failed, the other {len(cases) - len(failures)} "
                         f"were written: {listing}")
    return EXIT_OK


def with_inference_settings(card, settings: list[str]):  # noqa: ANN001, ANN202
    """The card with ``--inference KEY=VALUE`` changes (VALUE as JSON, else as text); a bad one is an InputError."""
    changes: dict[str, object] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--inference {item!r}: expected KEY=VALUE, e.g. blend=\"constant\"")
        try:
            changes[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            changes[key.strip()] = text
    if not changes:
        return card
    try:
        return card.with_inference(changes)
    except ModelError as exc:
        raise InputError(f"--inference: {exc}") from None


def _segment_case(args: argparse.Namespace, predictor, maps, reporter: Reporter,  # noqa: ANN001
                  cancel_event: threading.Event, case: Path, name: str, index: int, total: int) -> None:
    from .errors import Cancelled
    from .inference.result_folder import write_result

    out_dir = Path(args.output_dir) / name
    if out_dir.exists() and not args.overwrite:
        raise InputError(f"output folder {out_dir} already exists; pass --overwrite or choose another --output-dir")

    def progress(fraction: float, message: str) -> None:
        reporter.progress((index + fraction) / total, f"{name}: {message}" if total > 1 else message)

    result = predictor.predict(case, maps, progress=progress, cancel=cancel_event.is_set)
    if index == 0:
        reporter.emit("info", message=f"networks ran on {result.backend} ({result.device})")
    if result.timings.get("openvino_prepare"):
        reporter.emit("info", message=f"OpenVINO: model converted or loaded in {result.timings['openvino_prepare']:.1f} s "
                                      "(once per model; cached for later runs)")
    if result.timings.get("tta_passes"):
        reporter.emit("info", message=f"test-time mirroring: {int(result.timings['tta_passes'])} passes, "
                                      f"inference {result.timings['inference']:.1f} s (--no-tta: one pass)")
    for warning in result.warnings:
        reporter.emit("warning", message=warning)
    if cancel_event.is_set():
        raise Cancelled("cancelled by the user; nothing was written")
    written = write_result(result, out_dir, overwrite=args.overwrite, montage=args.montage, map_storage=args.map_storage)
    reporter.emit("result", output_dir=str(written), result=str(written / "result.json"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Threads that wait for work sleep instead of spinning: beside Slicer or another job a spinning
    # OpenMP pool slowed a run 5x (docs/benchmarks.md). Set before torch starts its thread pool.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    reporter = Reporter(getattr(args, "progress_format", "bar"))
    cancel_event = threading.Event()

    def request_cancel(signum: int, frame: object) -> None:  # noqa: ARG001
        cancel_event.set()

    previous = {sig: signal.signal(sig, request_cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from .modelstore.store import ModelStore

        store = ModelStore(args.model_dir)
        if args.command == "models":
            return cmd_models(args, store)
        if args.command == "install-weights":
            return cmd_install(args, store)
        if args.command == "devices":
            return cmd_devices(args)
        if args.command == "levels":
            return cmd_levels(args, store)
        return cmd_segment(args, store, reporter, cancel_event)
    except MedSegError as exc:
        reporter.emit("error", message=str(exc), code=exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001  - a bug: say so, with the exit code scripts can trust
        reporter.emit("error", message=f"internal error: {type(exc).__name__}: {exc}", code=EXIT_BUG)
        if os.environ.get("MEDSEG_DEBUG"):
            raise
        return EXIT_BUG
    finally:
        reporter.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
