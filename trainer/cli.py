"""`kenpin-trainer`: train, evaluate, benchmark; serve retraining and manage releases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.manifest import Scoring
from trainer.losses import LossWeights
from trainer.train import TrainConfig


def _train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    w = LossWeights()
    p.add_argument("--data", type=Path, required=True, help="dataset root in MVTec layout")
    p.add_argument("--backbone", default=d.backbone, choices=["efficientnet_lite0", "resnet18"])
    p.add_argument(
        "--teacher-weights", type=Path, help="ImageNet weights file (resnet18 needs one)"
    )
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--dcam", default=d.dcam, choices=["none", "channel", "spatial", "both"])
    p.add_argument(
        "--checkpoint",
        default=d.checkpoint,
        choices=["val_map", "synthetic"],
        help="epoch kept: lowest mean map of held-out normals, or best AUROC against "
        "defects drawn on them",
    )
    p.add_argument(
        "--scales",
        default=",".join(map(str, d.scoring.scales)),
        help="pyramid levels in the map, e.g. 1,2 (0: stride 4, 1: stride 8, 2: stride 16)",
    )
    p.add_argument("--feature-pool", type=int, default=d.scoring.feature_pool)
    p.add_argument("--top-fraction", type=float, default=d.scoring.top_fraction)
    p.add_argument("--channel-cd", type=float, default=w.channel_cd)
    p.add_argument("--spatial-cd", type=float, default=w.spatial_cd)
    p.add_argument("--spatial-kd", type=float, default=w.spatial_kd)
    p.add_argument("--channel-kd", type=float, default=w.channel_kd)
    p.add_argument("--temperature", type=float, default=w.temperature)
    p.add_argument(
        "--hard-fraction",
        type=float,
        default=w.hard_fraction,
        help="train channel CD on this largest fraction of pixel distances only (0: all)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="bf16 autocast for the student (faster on CPU)"
    )
    p.add_argument(
        "--device", default=d.device, choices=["auto", "cpu", "cuda"], help="auto: CUDA if present"
    )


def _study_args(p: argparse.ArgumentParser, epochs: int) -> None:
    """What the ablation and the sweep share: data, output, budget, seed, precision."""
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA if present"
    )


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        backbone=args.backbone,
        teacher_weights=str(args.teacher_weights) if args.teacher_weights else None,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_fraction=args.val_fraction,
        dcam=args.dcam,
        losses=LossWeights(
            channel_cd=args.channel_cd,
            spatial_cd=args.spatial_cd,
            spatial_kd=args.spatial_kd,
            channel_kd=args.channel_kd,
            temperature=args.temperature,
            hard_fraction=args.hard_fraction,
        ),
        bf16=args.bf16,
        device=args.device,
        checkpoint=args.checkpoint,
        scoring=Scoring(
            scales=tuple(int(v) for v in args.scales.split(",")),
            feature_pool=args.feature_pool,
            top_fraction=args.top_fraction,
        ),
    )


CONTROL_COMMANDS = {
    "serve",
    "retrain",
    "retrain-status",
    "import-normals",
    "mark-good",
    "release",
    "workers",
}


def _control_args(sub: argparse._SubParsersAction) -> None:
    """The service and the operator's commands (settings: KENPIN_* environment variables)."""
    sub.add_parser("serve", help="retrain on schedule and on request; gate; release")

    p = sub.add_parser("retrain", help="ask the trainer service for a retrain; prints its id")
    p.add_argument("--reason", required=True, help="why, in words")
    p.add_argument("--who", default=None, help="who asks (default: user@host)")
    p.add_argument(
        "--recipe",
        type=json.loads,
        default=None,
        help='JSON overrides of the trainer\'s recipe for this run, e.g. \'{"epochs": 30}\'',
    )

    p = sub.add_parser("retrain-status", help="the outcome of a retrain request")
    p.add_argument("request_id")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it to finish")

    p = sub.add_parser("import-normals", help="seed the normal store from a folder of images")
    p.add_argument("--product", required=True)
    p.add_argument("folder", type=Path)

    p = sub.add_parser("mark-good", help="file a flagged frame as a normal of its product")
    p.add_argument("frame_id")
    p.add_argument("--product", help="default: read from the stored frame")
    p.add_argument("--line", help="narrows the search for the frame")

    p = sub.add_parser("release", help="list releases, activate one, roll back")
    rel = p.add_subparsers(dest="action", required=True)
    rel.add_parser("list", help="releases in the bucket, * marks the current one")
    act = rel.add_parser("activate", help="make a stored release current")
    act.add_argument("version")
    rel.add_parser("rollback", help="make the previous release current again")

    sub.add_parser("workers", help="live workers and the release each one serves")


def main(argv: list[str] | None = None) -> int:
    from worker.logs import configure_logging

    parser = argparse.ArgumentParser(prog="kenpin-trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one multi-class model and export an artifact")
    _train_args(p)
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--threshold-quantile", type=float, default=0.99)

    p = sub.add_parser("eval", help="evaluate an artifact on the test split")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, help="report folder (default: <model>/eval)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA if present"
    )

    p = sub.add_parser("ablation", help="train and evaluate the paper's variants in one run")
    _study_args(p, epochs=20)
    p.add_argument("--variant", action="append", help="only these variants (repeatable)")

    p = sub.add_parser(
        "sweep", help="hyperparameter trials judged on the tune half of the labelled test images"
    )
    _study_args(p, epochs=5)
    p.add_argument("--trial", action="append", help="only these trials (repeatable; default all)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also score every epoch under each scoring variant (scales, feature "
        "averaging, top-k score) and print the tiles' table",
    )

    p = sub.add_parser("bench", help="inference images/s at several batch sizes and precisions")
    p.add_argument("--model", type=Path, help="artifact (default: a fresh untrained pair)")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="time per measurement")

    _control_args(sub)

    args = parser.parse_args(argv)
    configure_logging()
    if args.command in CONTROL_COMMANDS:
        from trainer.operations import run_control_command

        return run_control_command(args)

    if args.command == "train":
        from trainer.export import export
        from trainer.train import train

        result = train(args.data, _config(args))
        manifest = export(result, args.out, quantile=args.threshold_quantile)
        print(f"wrote {args.out} version {manifest.version} sha256 {manifest.sha256}")
        for product, entry in manifest.products.items():
            print(f"  {product}: threshold {entry.threshold:.4f} ({entry.rule})")
        return 0
    if args.command == "eval":
        from trainer.evaluate import evaluate_artifact, format_table

        report = evaluate_artifact(
            args.model,
            args.data,
            args.out or args.model / "eval",
            precision=args.precision,
            device=args.device,
        )
        print(format_table({"model": report}))
        return 0
    if args.command == "ablation":
        from trainer.ablation import run_ablation

        results = run_ablation(
            args.data, args.out, args.epochs, args.batch_size, args.seed, args.bf16, args.variant
        )
        from trainer.evaluate import format_defects, format_table

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
    if args.command == "sweep":
        from trainer.sweep import DIAGNOSIS, TRIALS, format_sweep, format_variants, run_sweep

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
    if args.command == "bench":
        from trainer.benchmark import run_benchmark

        run_benchmark(args.model, args.batch or [1, 16], args.seconds)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
