"""The operator's commands of `kenpin-trainer` that talk to the control plane and the bucket."""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import socket
import time

from trainer.settings import TrainerSettings

_FINAL = {"released", "refused", "failed"}


def run_control_command(args: argparse.Namespace) -> int:
    """Dispatch one of `trainer.cli.CONTROL_COMMANDS`; returns the exit status."""
    from trainer import normal_store, releases
    from trainer.control import RetrainQueue
    from worker.control import ControlPlane
    from worker.logs import configure_logging
    from worker.storage import ObjectStore

    settings = TrainerSettings()
    configure_logging(settings.log_format, settings.log_level)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    store = ObjectStore.from_settings(settings)

    if args.command == "serve":
        from trainer.service import RetrainService

        store.ensure_bucket()
        service = RetrainService(settings, control, store)
        signal.signal(signal.SIGTERM, service.stop)
        signal.signal(signal.SIGINT, service.stop)
        service.serve()
        return 0
    if args.command == "retrain":
        who = args.who or f"{getpass.getuser()}@{socket.gethostname()}"
        queue = RetrainQueue(control, settings.outcome_ttl_s)
        print(queue.request(args.reason, who, args.recipe))
        return 0
    if args.command == "retrain-status":
        queue = RetrainQueue(control, settings.outcome_ttl_s)
        deadline = time.monotonic() + args.wait
        outcome = queue.outcome(args.request_id)
        while outcome is not None and outcome.status not in _FINAL and time.monotonic() < deadline:
            time.sleep(1.0)
            outcome = queue.outcome(args.request_id)
        if outcome is None:
            print(f"no retrain request {args.request_id}")
            return 1
        print(outcome.model_dump_json(indent=2))
        return 0 if outcome.status in {"released", "queued", "running"} else 3
    if args.command == "import-normals":
        store.ensure_bucket()
        keys = normal_store.import_folder(store, args.product, args.folder)
        print(f"imported {len(keys)} normals of {args.product}")
        return 0 if keys else 1
    if args.command == "mark-good":
        try:
            key = normal_store.mark_good(store, args.frame_id, product=args.product, line=args.line)
        except normal_store.FrameNotFound as exc:
            print(exc)
            return 1
        print(f"filed {args.frame_id} as {key}")
        return 0
    if args.command == "release":
        try:
            if args.action == "list":
                for entry in releases.list_releases(store, control):
                    m = entry.manifest
                    mark = "*" if entry.current else " "
                    print(
                        f"{mark} {m.version}  created {m.created:%Y-%m-%d %H:%M}  "
                        f"parent {m.parent_version or '-'}  products {','.join(m.products)}"
                    )
                return 0
            if args.action == "activate":
                manifest = releases.activate(store, control, args.version)
            else:
                manifest = releases.rollback(store, control)
        except releases.ReleaseError as exc:
            print(exc)
            return 1
        print(f"current release: {manifest.version}")
        return 0
    if args.command == "workers":
        for beat in control.heartbeats():
            print(json.dumps(beat.model_dump(mode="json")))
        return 0
    return 2
