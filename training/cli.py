"""Command line: ``python -m training fit`` and ``python -m training evaluate``.

fit: ``--recipe NAME|PATH --data PATH --fold K|all [--out DIR] [--stage ROLE|all] [--max-steps N]
[--stop-after N] [--device D] [--resume] [--set section.key=value ...] [--dtype float16]``.
Options override the recipe's YAML values. After training (rank 0) the fold's best weights are
exported under ``<out>/fold_<k>/export/`` once every network of the card is trained.

evaluate: ``--card CARD --weights FILE`` or ``--model-dir DIR``, ``--data PATH --fold K
[--splits-dir DIR] [--out DIR]``: per-case metrics (CSV) and a summary (JSON, printed).
cv: ``--recipe R --data PATH [--folds 0,1,..] [--time-limit S]``: every fold fitted (resuming), exported
and evaluated; exit code 3 when the time limit stopped it (run it again to continue).
report: ``--experiment NAME=runs/<recipe> [...] --out DIR [--montage-data PATH]``: cross-validation
table, Dice box plot and worst/median/best montage (:mod:`training.report`).
bundle: ``--model-dir EXPORT``: ship a float16 export in the package (:mod:`training.bundling`).
Multi-process: ``python -m torch.distributed.run --nproc-per-node N -m training fit ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from MedSegAttentionLib.choices import PRUNING_LEVELS

__all__ = ["main"]


def _fold(value: str) -> int | str:
    return value if value == "all" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train and evaluate MedSegAttention models.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one recipe on one fold, then export the best weights")
    fit.add_argument("--recipe", required=True, help="shipped recipe name (see --list) or path to a YAML file")
    fit.add_argument("--data", required=True, help="data set folder in MSD / nnU-Net layout")
    fit.add_argument("--fold", type=_fold, default=0, help="fold index, or 'all' (no validation)")
    fit.add_argument("--out", help="experiment folder (default runs/<recipe>)")
    fit.add_argument("--stage", help="role of a cascade to train (e.g. liver, axial) or 'all'")
    fit.add_argument("--max-steps", type=int, help="training steps (the schedule's length)")
    fit.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step, as an interruption")
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--device", default="auto")
    fit.add_argument("--resume", action="store_true", help="continue from last.pt of this fold/stage")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    fit.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="dtype of the exported weights")
    fit.add_argument("--no-export", action="store_true")
    fit.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evaluate", help="evaluate an exported model on a fold's validation cases")
    ev.add_argument("--card")
    ev.add_argument("--weights")
    ev.add_argument("--model-dir", help="export folder holding the card and its weights")
    ev.add_argument("--data", required=True)
    ev.add_argument("--fold", type=_fold, default=0)
    ev.add_argument("--splits-dir", help="experiment folder with splits.json (default: the validation cases "
                    "named in the card's provenance, else its split seed)")
    ev.add_argument("--label-mapping", help="preset name (default: the card's provenance)")
    ev.add_argument("--out", help="output folder (default: evaluation_fold_K[_variant][_tta] next to the card)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--variant", default="original", choices=["original", "padded", "oblique", "sagittal", "coronal", "ras", "spikes"],
                    help="deliver each case as stored, with a larger zero-filled field of view, obliquely "
                         "resampled with thick slices, stored in another axis order, or with spike voxels (training.robustness)")
    ev.add_argument("--tta", dest="tta", action="store_true", default=None, help="test-time mirroring on")
    ev.add_argument("--no-tta", dest="tta", action="store_false", help="test-time mirroring off")
    ev.add_argument("--maps", action="store_true", help="also compute the evidence maps and their spread near the organ")
    ev.add_argument("--level", choices=list(PRUNING_LEVELS), help="ANU-Net pruning level (default: the card's)")
    ev.add_argument("--inference", action="append", default=[], metavar="KEY=VALUE",
                    help="change one of the card's inference settings (as medseg segment --inference), e.g. "
                         "max_window_voxels=1000000 to measure planned whole-volume windows")
    cv = sub.add_parser("cv", help="k-fold cross-validation: fit (resumable) and evaluate every fold, print the table")
    cv.add_argument("--recipe", required=True)
    cv.add_argument("--data", required=True)
    cv.add_argument("--out", help="experiment folder (default runs/<recipe>)")
    cv.add_argument("--folds", help="comma-separated fold indices (default: all of the recipe's folds)")
    cv.add_argument("--time-limit", type=float, help="seconds for this command; stops with checkpoints (exit 3), "
                    "the same command continues")
    cv.add_argument("--max-steps", type=int)
    cv.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="dtype of the exported weights")
    cv.add_argument("--device", default="auto")
    cv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cv.add_argument("--no-progress", action="store_true")
    rep = sub.add_parser("report", help="cross-validation table, Dice box plot and case montage from evaluated folds")
    rep.add_argument("--experiment", action="append", required=True, metavar="NAME=DIR",
                     help="a model's experiment folder (runs/<recipe>) with evaluated folds; repeat per model")
    rep.add_argument("--out", required=True, help="folder for cv_table.md, dice_boxplot.png, montage.png")
    rep.add_argument("--montage-data", help="data set of the first experiment: also draw its worst/median/best case")
    rep.add_argument("--montage-map", help="evidence map drawn in the montage (default: the card's first)")
    rep.add_argument("--compare-case", help="with --montage-data: comparison.md and comparison.png, this case by every model")
    rep.add_argument("--device", default="auto")
    bun = sub.add_parser("bundle", help="ship an exported model inside the package (catalog card + weights + reference output)")
    bun.add_argument("--model-dir", required=True, help="export folder holding the card and its float16 weights")
    sub.add_parser("list", help="list the shipped recipes")
    return parser


def _recipe(args: argparse.Namespace):  # noqa: ANN202
    from .recipes import load_recipe

    overrides = list(args.overrides)
    for option, key in (("max_steps", "train.max_steps"), ("stop_after", "train.stop_after"),
                        ("batch_size", "sampling.batch_size"), ("seed", "train.seed"), ("dtype", "export.dtype")):
        if getattr(args, option, None) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    return load_recipe(args.recipe, overrides)


def _export(recipe, out: Path, fold: int | str, val_cases: list[str], data: str) -> tuple[Path, Path] | None:  # noqa: ANN001
    """Export the fold's best weights (with the split in the provenance) once every role is trained."""
    from .fold_export import export_fold, missing_roles

    fold_dir = out / f"fold_{fold}"
    extra = {"fold": fold, "folds": recipe["data"]["folds"], "split_seed": recipe["data"]["split_seed"],
             "val_cases": val_cases, "data": Path(data).resolve().name}  # the data set's name, never a machine path
    exported = export_fold(recipe, fold_dir, dtype=str(recipe["export"]["dtype"]), extra=extra)
    if exported is None:
        print(f"export waits for the other stages: train {', '.join(missing_roles(recipe, fold_dir))}")
    else:
        card_path, weights_path = exported
        print(f"exported {card_path} and {weights_path}\n"
              f"install: medseg install-weights --card {card_path} {weights_path}")
    return exported


def _fit(args: argparse.Namespace) -> int:
    from .distributed import cleanup, init_distributed
    from .loop import fit

    recipe = _recipe(args)
    out = Path(args.out or Path("runs") / recipe.name)
    stages = recipe.roles if args.stage == "all" else [args.stage] if args.stage else [None]
    results = []
    for stage in stages:
        results.append(fit(recipe.for_stage(stage), args.data, args.fold, out, device=args.device,
                           resume=args.resume, progress=not args.no_progress))
    import torch.distributed as dist

    is_main = not dist.is_initialized() or dist.get_rank() == 0
    finished = all(r.step >= int(recipe.for_stage(s)["train"]["max_steps"]) for r, s in zip(results, stages))
    if is_main:
        for r in results:
            print(f"{recipe.name} [{r.role}] fold {args.fold}: step {r.step}, last loss {r.last_loss:.4f}, "
                  f"best validation Dice {r.best_dice:.4f} ({r.run_dir})")
        if not args.no_export and finished:
            _export(recipe, out, args.fold, results[-1].val_cases, args.data)
    if dist.is_initialized():
        dist.barrier()
        cleanup(init_distributed("cpu"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model, find_model, format_summary

    if args.model_dir:
        card_path, weights_path = find_model(args.model_dir)
    elif args.card and args.weights:
        card_path, weights_path = Path(args.card), Path(args.weights)
    else:
        print("evaluate needs --card and --weights, or --model-dir", file=sys.stderr)
        return 2
    suffix = ("" if args.variant == "original" else f"_{args.variant}") + {None: "", True: "_tta", False: "_notta"}[args.tta]
    suffix += f"_{args.level}" if args.level else ""
    if args.inference and not args.out:
        print("evaluate --inference needs --out (the results differ from the card's)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(card_path).parent / f"evaluation_fold_{args.fold}{suffix}"
    summary = evaluate_model(card_path, weights_path, args.data, args.fold, out, args.splits_dir, args.label_mapping,
                             args.device, args.variant, args.tta, args.maps, args.level, args.inference)
    print(format_summary(summary))
    print(f"per-case table: {out / 'per_case.csv'}; summary: {out / 'summary.json'}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    """Every fold: fit (resuming), export, evaluate; skips evaluated folds; exit 3 when time ran out."""
    import time

    from .evaluate import evaluate_model
    from .loop import fit
    from .report import collect, cv_table

    recipe = _recipe(args)
    out = Path(args.out or Path("runs") / recipe.name)
    folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(int(recipe["data"]["folds"])))
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    trained = False  # the first fit of a command always makes progress (at least one step)
    for fold in folds:
        evaluation = out / f"fold_{fold}" / "export" / f"evaluation_fold_{fold}"
        if (evaluation / "summary.json").is_file():
            print(f"fold {fold}: already evaluated ({evaluation})")
            continue
        for stage in recipe.roles:
            staged = recipe.for_stage(stage)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0 and trained:
                print(f"time limit reached before fold {fold} [{stage}]; run the same command again to continue")
                return 3
            result = fit(staged, args.data, fold, out, device=args.device, resume=True,
                         progress=not args.no_progress, time_limit_s=left)
            trained = True
            if result.step < int(staged["train"]["max_steps"]):
                print(f"fold {fold} [{stage}] stopped at step {result.step}; run the same command again to continue")
                return 3
        exported = _export(recipe, out, fold, result.val_cases, args.data)
        if exported is None:
            return 1
        evaluate_model(*exported, args.data, fold, evaluation, splits_dir=out, device=args.device)
        print(f"fold {fold}: evaluated ({evaluation / 'per_case.csv'})")
    print(cv_table(collect(recipe.name, out)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import collect, cv_table, save_boxplot, save_case_montage

    results = []
    for item in args.experiment:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            print(f"--experiment takes NAME=DIR, got {item!r}", file=sys.stderr)
            return 2
        results.extend(collect(name, folder))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = cv_table(results)
    (out / "cv_table.md").write_text(table, encoding="utf-8")
    save_boxplot(results, out / "dice_boxplot.png")
    print(table)
    if args.montage_data:
        first = [r for r in results if r.model == results[0].model]
        shown = save_case_montage(first, args.montage_data, out / "montage.png", args.device, args.montage_map)
        print(f"montage of {', '.join(shown)}: {out / 'montage.png'}")
    if args.compare_case and args.montage_data:
        from .report import comparison_table, save_comparison

        comparison = comparison_table(results)
        (out / "comparison.md").write_text(comparison, encoding="utf-8")
        save_comparison(results, args.montage_data, args.compare_case, out / "comparison.png", args.device)
        print(comparison + f"comparison of {args.compare_case}: {out / 'comparison.png'}")
    print(f"written: {out / 'cv_table.md'}, {out / 'dice_boxplot.png'}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from .bundling import bundle_model
    from .evaluate import find_model

    card, weights, reference = bundle_model(*find_model(args.model_dir))
    print(f"bundled: {weights} ({weights.stat().st_size / 1e6:.2f} MB)\ncatalog card: {card}\nreference output: {reference}\n"
          "list the weights file in MedSegAttention/CMakeLists.txt (MODULE_PYTHON_RESOURCES) if it is new")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        from .recipes import load_recipe, recipe_names

        for name in recipe_names():
            print(f"{name}: roles {', '.join(load_recipe(name).roles)}")
        return 0
    commands = {"fit": _fit, "evaluate": _evaluate, "cv": _cv, "report": _report, "bundle": _bundle}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
