"""`kenpin-trainer`: train, evaluate, benchmark; serve retraining and manage releases."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from model.runtimes import PRECISIONS, RUNTIMES, Device
from trainer.learning.config import (
    CLI_EXPANDED,
    REQUEST_KEYS,
    RecipeError,
    TrainConfig,
    flat_fields,
    from_flat,
    recipe_config,
)
from trainer.service import commands
from trainer.service.settings import TrainerSettings

if TYPE_CHECKING:
    from schemas.manifest import ModelManifest

# Nothing that imports torch at module level: `kenpin-trainer --help` must answer at
# once. The commands import what they need when they run.

#: TrainConfig's fields as `kenpin-trainer train` sets them: one flag per scalar.
TRAIN_FIELDS = flat_fields(CLI_EXPANDED)


class UsageError(Exception):
    """A command's arguments that argparse could not check: reported like argparse does."""


# --- flags derived from pydantic fields ------------------------------------------------


def add_field_flags(
    parser: argparse.ArgumentParser,
    fields: Mapping[str, FieldInfo],
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """A `--field-name` per field, its description as help, its default (or `defaults`')."""
    defaults = defaults or {}
    for name, info in fields.items():
        declared = info.get_default(call_default_factory=True)
        default = defaults.get(name, declared)
        shown = f"default: {_shown(default)}"
        if name in defaults and default != declared:
            shown += f" here; {_shown(declared)} in a training run"
        description = (info.description or "").rstrip(".")
        help_text = f"{description} ({shown})" if description else f"({shown})"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=default,
            help=help_text.replace("%", "%%"),
            **_argument(name, info.annotation),
        )


def _argument(name: str, annotation: Any) -> dict[str, Any]:
    """argparse's type, choices or action for a field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _argument(name, inner)
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str):
        return {"type": annotation}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": _comma_list(args[0]), "metavar": f"{args[0].__name__},..."}
    if origin is dict:
        return {"type": _json_object, "metavar": "JSON"}
    raise TypeError(f"no command-line flag for field {name!r} of type {annotation!r}")


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


_json_object.__name__ = "JSON object"  # argparse's error message


def _comma_list(item: type) -> Any:
    def parse(text: str) -> tuple:
        return tuple(item(v) for v in text.split(","))

    parse.__name__ = f"comma-separated {item.__name__}s"  # argparse's error message
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _config(args: argparse.Namespace) -> TrainConfig:
    try:
        return from_flat({name: getattr(args, name) for name in TRAIN_FIELDS}, CLI_EXPANDED)
    except ValidationError as exc:
        raise UsageError(_problems(exc)) from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _recipe(text: str) -> dict[str, Any]:
    """`--recipe`: a JSON object whose keys and values a trainer accepts."""
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(recipe, dict):
        raise argparse.ArgumentTypeError("a JSON object of recipe keys and values")
    try:
        recipe_config({}, recipe)
    except RecipeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return recipe


# --- the commands ----------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)
    from model.backbones import BACKBONES

    if config.backbone not in BACKBONES:
        raise UsageError(f"unknown backbone {config.backbone!r}; one of {sorted(BACKBONES)}")
    from trainer.learning.export import export
    from trainer.learning.learners import fit

    result = fit(args.data, config)
    manifest = export(
        result,
        args.out,
        quantile=args.threshold_quantile,
        onnx=True,
        per_product=args.product_threshold_quantiles,
    )
    files = ", ".join(f"{f.name} sha256 {f.sha256}" for f in manifest.files)
    print(f"wrote {args.out} version {manifest.version}: {files}")
    _print_thresholds(manifest)
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from trainer.learning.export import export_with_memory

    if args.memory_patches < 1:
        raise UsageError("--memory-patches: at least 1 (a release without a head is the input)")
    manifest = _new_release(
        args,
        lambda: export_with_memory(
            args.model,
            args.data,
            args.out,
            args.memory_patches,
            args.memory_stride,
            quantile=args.threshold_quantile,
            per_product=args.product_threshold_quantiles,
        ),
    )
    head = manifest.memory_head
    assert head is not None
    for product, share in head.products.items():
        print(f"  {product}: {share.rows} memory rows, weight {share.weight:.4f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from trainer.learning.export import recalibrate

    _new_release(
        args,
        lambda: recalibrate(
            args.model,
            args.data,
            args.out,
            quantile=args.threshold_quantile,
            per_product=args.product_threshold_quantiles,
        ),
    )
    return 0


def _new_release(args: argparse.Namespace, make: Callable[[], ModelManifest]) -> ModelManifest:
    """Make a release from another (refusals are usage errors) and say what it promises."""
    try:
        manifest = make()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"wrote {args.out} version {manifest.version} (from {manifest.parent_version})")
    _print_thresholds(manifest)
    return manifest


def _print_thresholds(manifest: ModelManifest) -> None:
    for product, entry in manifest.products.items():
        promise = ""
        if entry.expected_false_alarm_rate is not None and entry.false_alarm_interval:
            low, high = entry.false_alarm_interval
            promise = (
                f", expected false alarms {100 * entry.expected_false_alarm_rate:.2f} % "
                f"(95 %: {100 * low:.2f}-{100 * high:.2f} %)"
            )
        print(f"  {product}: threshold {entry.threshold:.4f}{promise} ({entry.rule})")


def cmd_eval(args: argparse.Namespace) -> int:
    from trainer.learning.evaluate import (
        evaluate_artifact,
        format_defects,
        format_promises,
        format_table,
    )

    report = evaluate_artifact(
        args.model,
        args.data,
        args.out or args.model / "eval",
        precision=args.precision,
        device=args.device,
    )
    print(format_table({"model": report}))
    for product, metrics in report["products"].items():
        halves = metrics["image_auroc_by_half"].items()
        print(f"{product}: image AUROC " + ", ".join(f"{k} {100 * v:.1f}" for k, v in halves))
    print("\nthe threshold's promise: false alarms on normals, stated and measured")
    print(format_promises(report))
    print("\nper defect: image AUROC / AU-PRO / recall at the threshold (%)")
    print(format_defects({"model": report}))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from trainer.learning.evaluate import format_defects, format_table
    from trainer.research.ablation import run_ablation

    results = run_ablation(
        args.data, args.out, args.epochs, args.batch_size, args.seed, args.bf16, args.variant
    )
    print(format_table(results))
    print()
    print("image AUROC / AU-PRO per defect type")
    print(format_defects(results))
    print()
    for name, report in results.items():
        t = report["training"]
        print(
            f"{name}: {t['epochs']} epochs, best epoch {t['best_epoch']}, "
            f"training {t['seconds'] / 60:.1f} min"
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from trainer.research.sweep import DIAGNOSIS, TRIALS, format_sweep, format_variants, run_sweep

    rows = run_sweep(
        args.data,
        args.out,
        args.trial or list(TRIALS),
        args.epochs,
        args.batch_size,
        args.seed,
        args.bf16,
        image_size=args.image_size,
        variants=DIAGNOSIS if args.diagnose else None,
        device=args.device,
    )
    print(format_sweep(rows))
    for name, history in rows.items():
        table = format_variants(history)
        if table:
            print(f"\n{name}\n{table}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from trainer.research.benchmark import run_benchmark

    run_benchmark(
        args.model,
        args.batch or [1, 16],
        args.seconds,
        runtimes=args.runtime,
        rounds=args.rounds,
        device=args.device,
        json_path=args.json,
    )
    return 0


# --- the parser ------------------------------------------------------------------------


#: The flags of the threshold rule: what every command that calibrates takes.
CALIBRATION_FIELDS = {
    n: TrainerSettings.model_fields[n]
    for n in ("threshold_quantile", "product_threshold_quantiles")
}


def _study_args(p: argparse.ArgumentParser, epochs: int, extra: tuple[str, ...] = ()) -> None:
    """What the ablation and the sweep share: data, output, a short budget, seed, precision."""
    p.add_argument("--data", type=Path, required=True, help="dataset root in MVTec layout")
    p.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    names = ("epochs", "batch_size", "seed", "bf16", "device", *extra)
    add_field_flags(p, {n: TRAIN_FIELDS[n] for n in names}, defaults={"epochs": epochs})


def _from_a_release(
    sub: argparse._SubParsersAction, name: str, text: str
) -> argparse.ArgumentParser:
    """A command that makes a release from a trained one, on the data it was trained on."""
    p = sub.add_parser(name, help=text)
    p.add_argument("--model", type=Path, required=True, help="the trained release's folder")
    p.add_argument("--data", type=Path, required=True, help="the data it was trained on")
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    add_field_flags(p, CALIBRATION_FIELDS)
    return p


def _training_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one multi-class model and export an artifact")
    p.add_argument("--data", type=Path, required=True, help="dataset root in MVTec layout")
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    add_field_flags(p, TRAIN_FIELDS)
    add_field_flags(p, CALIBRATION_FIELDS)
    p.set_defaults(run=cmd_train)

    p = _from_a_release(
        sub,
        "memory",
        "a trained release again, with a memory head fitted on its training normals "
        "and thresholds calibrated on the fused map",
    )
    add_field_flags(p, {n: TRAIN_FIELDS[n] for n in ("memory_patches", "memory_stride")})
    p.set_defaults(run=cmd_memory)

    p = _from_a_release(
        sub,
        "calibrate",
        "the same release again, its thresholds calibrated by today's rule on its own "
        "held-out normals (stating the false-alarm rate each promises)",
    )
    p.set_defaults(run=cmd_calibrate)

    p = sub.add_parser("eval", help="evaluate an artifact on the test split")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, help="report folder (default: <model>/eval)")
    add_field_flags(p, {"device": TRAIN_FIELDS["device"]})
    p.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="inference precision (torch)"
    )
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser(
        "ablation",
        help="train and evaluate the paper's variants in one run (a short research budget)",
    )
    _study_args(p, epochs=20)
    p.add_argument("--variant", action="append", help="only these variants (repeatable)")
    p.set_defaults(run=cmd_ablation)

    p = sub.add_parser(
        "sweep",
        help="hyperparameter trials judged on the tune half of the labelled test images "
        "(a short research budget)",
    )
    _study_args(p, epochs=5, extra=("image_size",))
    p.add_argument("--trial", action="append", help="only these trials (repeatable; default all)")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also score every epoch under each scoring variant (scales, feature "
        "averaging, top-k score) and print the tiles' table",
    )
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("bench", help="inference images/s at several batch sizes and precisions")
    p.add_argument("--model", type=Path, help="artifact (default: a fresh untrained pair)")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    p.add_argument(
        "--runtime",
        action="append",
        help="runtime[:precision], repeatable, all measured in one run: "
        + ", ".join(RUNTIMES)
        + " (GPU: torch-compile, torch-cudagraphs); default torch "
        + " and ".join(RUNTIMES["torch"].bench_precisions),
    )
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (best is shown)")
    p.add_argument("--device", default="cpu", choices=typing.get_args(Device))
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.set_defaults(run=cmd_bench)


def _control_commands(sub: argparse._SubParsersAction) -> None:
    """The service and the operator's commands (settings: KENPIN_* environment variables)."""
    p = sub.add_parser("serve", help="retrain on schedule and on request; gate; release")
    p.set_defaults(run=commands.serve)

    p = sub.add_parser("retrain", help="ask the trainer service for a retrain; prints its id")
    p.add_argument("--reason", required=True, help="why, in words")
    p.add_argument("--who", default=None, help="who asks (default: user@host)")
    p.add_argument(
        "--recipe",
        type=_recipe,
        default=None,
        help="JSON overrides of the trainer's recipe for this run, e.g. '{\"epochs\": 30}'; "
        f"keys: {', '.join(REQUEST_KEYS)}",
    )
    p.set_defaults(run=commands.retrain)

    p = sub.add_parser("retrain-status", help="the outcome of a retrain request")
    p.add_argument("request_id")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it to finish")
    p.set_defaults(run=commands.retrain_status)

    p = sub.add_parser("import-normals", help="seed the normal store from a folder of images")
    p.add_argument("--product", required=True)
    p.add_argument("folder", type=Path)
    p.set_defaults(run=commands.import_normals)

    p = sub.add_parser("mark-good", help="file a flagged frame as a normal of its product")
    p.add_argument("frame_id")
    p.add_argument("--product", help="default: read from the stored frame")
    p.add_argument("--line", help="narrows the search for the frame")
    p.set_defaults(run=commands.mark_good)

    p = sub.add_parser("release", help="list releases, activate one, roll back")
    rel = p.add_subparsers(dest="action", required=True)
    a = rel.add_parser("list", help="releases in the bucket, * marks the current one")
    a.set_defaults(run=commands.release_list)
    a = rel.add_parser("activate", help="make a stored release current")
    a.add_argument("version")
    a.set_defaults(run=commands.release_activate)
    a = rel.add_parser("rollback", help="make the previous release current again")
    a.set_defaults(run=commands.release_rollback)

    p = sub.add_parser("workers", help="live workers and the release each one serves")
    p.set_defaults(run=commands.workers)

    p = sub.add_parser(
        "lifecycle",
        help="set the bucket's retention rules (heatmaps, originals, normals) from the "
        "KENPIN_*_RETENTION_DAYS settings; `serve` also sets them at start",
    )
    p.set_defaults(run=commands.lifecycle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kenpin-trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _control_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from planes.logs import configure_logging

    configure_logging()
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"kenpin-trainer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
