"""The operator's commands of `kenpin-trainer` that talk to the control plane and the bucket.

One function per command (`trainer.cli` registers each with its parser); each
reads the `KENPIN_*` settings and connects to Redis and S3 when it runs, so the
command line's help needs neither.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from trainer.service.settings import TrainerSettings

if TYPE_CHECKING:
    from operations.plant import Plant
    from schemas.manifest import ModelManifest


@dataclass
class Plane:
    """What every operator command works with: its settings, and the plant's clients."""

    settings: TrainerSettings
    plant: Plant


def connect() -> Plane:
    """Settings from the environment, logging configured by them, the plant's clients.

    Settings that do not validate, and a Redis or S3 that refuses the credentials
    or the certificate, end the command with one line on stderr and exit status 2:
    an operator's mistake, which a traceback would only hide.
    """
    from pydantic import ValidationError

    from operations.plant import AccessDenied
    from operations.plant import connect as connect_plant
    from planes.settings import settings_problems

    try:
        settings = TrainerSettings()
    except ValidationError as exc:
        _fail(settings_problems(exc, TrainerSettings))
    try:
        plant = connect_plant(settings)
    except AccessDenied as exc:
        _fail(str(exc))
    return Plane(settings, plant)


def _fail(message: str) -> NoReturn:
    print(f"kenpin-trainer: {message}", file=sys.stderr)
    raise SystemExit(2)


def serve(args: argparse.Namespace) -> int:
    from planes.http_endpoints import serve as serve_http
    from trainer.service.retrain import RetrainService
    from trainer.service.telemetry import TrainerHealth, TrainerMetrics, make_trainer_app

    plane = connect()
    settings = plane.settings
    _yield_the_cpu(settings.trainer_nice)
    metrics = TrainerMetrics()
    health = TrainerHealth(livez_stall_s=settings.trainer_livez_stall_s)
    serve_http(
        make_trainer_app(metrics, health),
        settings.trainer_metrics_port,
        settings.trainer_metrics_host,
    )
    plane.plant.store.ensure_bucket()
    _apply_retention(plane, strict=False)
    service = RetrainService(
        settings, plane.plant.control, plane.plant.store, metrics=metrics, health=health
    )
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    service.serve()
    return 0


def _yield_the_cpu(niceness: int) -> None:
    """Lower this process's CPU priority to `niceness` (never raise it): the line first.

    The training threads torch starts inherit it. Within one container or host the
    kernel then gives the workers the CPU they ask for and the training what is left;
    across containers the deployment's CPU weights do (compose `cpu_shares`, k8s requests).
    """
    from planes.logs import get_logger

    current = os.nice(0)
    if niceness > current:
        os.nice(niceness - current)
    get_logger(__name__).info("trainer priority", niceness=os.nice(0))


def lifecycle(args: argparse.Namespace) -> int:
    """Set the bucket's retention rules from the settings and print what the server holds."""
    plane = connect()
    plane.plant.store.ensure_bucket()
    if not _apply_retention(plane, strict=True):
        return 1
    config = plane.plant.store.retention()
    rules = config.rules if config is not None else []
    print(f"bucket {plane.plant.store.bucket}: {len(rules)} retention rule(s)")
    for rule in rules:
        print(f"  {rule.rule_id}: expire after {rule.expiration.days} days")
    kept = [kind for kind, days in plane.settings.retention_days.items() if days == 0]
    if kept:
        print(f"  kept for ever: {', '.join(kept)}")
    return 0


def _apply_retention(plane: Plane, *, strict: bool) -> bool:
    """The retention settings as the bucket's lifecycle rules; False if S3 refused them.

    At `serve` (not strict) a refusal is a warning: an S3 without lifecycle support,
    or credentials without the right to set it, must not stop retraining.
    """
    from minio.error import S3Error

    from planes.logs import get_logger

    try:
        plane.plant.store.set_retention(plane.settings.retention_days)
    except S3Error as exc:
        message = (
            f"S3 refused the retention rules for bucket {plane.plant.store.bucket}: {exc.code}"
        )
        if strict:
            print(f"kenpin-trainer lifecycle: {message}", file=sys.stderr)
        else:
            get_logger(__name__).warning("retention rules not set", detail=message)
        return False
    return True


def retrain(args: argparse.Namespace) -> int:
    plane = connect()
    who = args.who or f"{getpass.getuser()}@{socket.gethostname()}"
    print(plane.plant.queue.request(args.reason, who, args.recipe))
    return 0


def retrain_status(args: argparse.Namespace) -> int:
    queue = connect().plant.queue
    deadline = time.monotonic() + args.wait
    outcome = queue.outcome(args.request_id)
    while outcome is not None and not outcome.final and time.monotonic() < deadline:
        time.sleep(1.0)
        outcome = queue.outcome(args.request_id)
    if outcome is None:
        print(f"no retrain request {args.request_id}")
        return 1
    print(outcome.model_dump_json(indent=2))
    return 0 if outcome.status in {"released", "queued", "running"} else 3


def import_normals(args: argparse.Namespace) -> int:
    from operations import normal_store

    plane = connect()
    plane.plant.store.ensure_bucket()
    keys = normal_store.import_folder(plane.plant.store, args.product, args.folder)
    print(f"imported {len(keys)} normals of {args.product}")
    return 0 if keys else 1


def mark_good(args: argparse.Namespace) -> int:
    from operations import normal_store

    plane = connect()
    try:
        key = normal_store.mark_good(
            plane.plant.store, args.frame_id, product=args.product, line=args.line
        )
    except normal_store.FrameNotFound as exc:
        print(exc)
        return 1
    print(f"filed {args.frame_id} as {key}")
    return 0


def release_list(args: argparse.Namespace) -> int:
    from operations import releases

    plane = connect()
    try:
        for entry in releases.list_releases(plane.plant.store, plane.plant.control):
            m = entry.manifest
            mark = "*" if entry.current else " "
            print(
                f"{mark} {m.version}  created {m.created:%Y-%m-%d %H:%M}  "
                f"parent {m.parent_version or '-'}  products {','.join(m.products)}"
            )
    except releases.ReleaseError as exc:
        print(exc)
        return 1
    return 0


def release_activate(args: argparse.Namespace) -> int:
    from operations import releases

    plane = connect()
    return _now_current(
        lambda: releases.activate(plane.plant.store, plane.plant.control, args.version)
    )


def release_rollback(args: argparse.Namespace) -> int:
    from operations import releases

    plane = connect()
    return _now_current(lambda: releases.rollback(plane.plant.store, plane.plant.control))


def _now_current(make_current: Callable[[], ModelManifest]) -> int:
    from operations import releases

    try:
        manifest = make_current()
    except releases.ReleaseError as exc:
        print(exc)
        return 1
    print(f"current release: {manifest.version}")
    return 0


def workers(args: argparse.Namespace) -> int:
    plane = connect()
    for beat in plane.plant.control.heartbeats():
        print(json.dumps(beat.model_dump(mode="json")))
    return 0
