"""`kenpin-worker`: run the streaming worker, or stream a folder as a camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.topics import FRAMES_TOPIC_PREFIX, frames_topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kenpin-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run",
        help=f"judge frames from {FRAMES_TOPIC_PREFIX}* until SIGTERM (settings: "
        "KENPIN_* environment variables)",
    )
    cam = sub.add_parser("camera", help="stream the images of a folder as frames of one line")
    cam.add_argument("--line", required=True)
    cam.add_argument("--source", type=Path, required=True, help="folder of PNG/JPEG images")
    cam.add_argument("--fps", type=float, default=5.0, help="frames per second; 0: no pacing")
    cam.add_argument("--count", type=int, help="frames to send (cycles through the folder)")
    cam.add_argument("--product", help="default: inferred from an MVTec-style path")
    cam.add_argument("--camera", default="cam-1")
    cam.add_argument(
        "--partitions",
        type=int,
        default=2,
        help="partitions of the line's frame topic, if this camera is the first to use it",
    )
    args = parser.parse_args(argv)

    from worker.logs import configure_logging
    from worker.settings import WorkerSettings

    settings = WorkerSettings()
    configure_logging(settings.log_format, settings.log_level)

    if args.command == "camera":
        from worker.camera import stream_folder
        from worker.kafka_io import TopicAdmin, make_producer

        # a new line's topic is made on purpose; no client creates one by sending to it
        topics = TopicAdmin(settings, settings.topic_replication)
        try:
            topics.ensure(frames_topic(args.line), args.partitions)
        finally:
            topics.close()
        producer = make_producer(settings, client_id=f"kenpin-camera-{args.camera}")
        try:
            sent = stream_folder(
                producer, args.line, args.source, args.fps, args.count, args.product, args.camera
            )
        finally:
            producer.close()
        print(f"sent {len(sent)} frames to {frames_topic(args.line)}")
        return 0

    from worker.control import ControlPlane
    from worker.hot_swap import HotSwap
    from worker.logs import get_logger
    from worker.metrics import Health, WorkerMetrics, make_app, serve
    from worker.normals import NormalSampler
    from worker.service import Worker
    from worker.startup import NoModelToServe, start_model
    from worker.storage import ObjectStore

    metrics = WorkerMetrics()
    health = Health(
        livez_stall_s=settings.livez_stall_s, startup_grace_s=settings.livez_startup_grace_s
    )
    # probes first: /livez answers while a release downloads, /readyz says "starting"
    serve(make_app(metrics, health), settings.metrics_port, settings.metrics_host)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    try:
        start = start_model(settings, control, store, metrics=metrics, health=health)
    except NoModelToServe as exc:
        # one line, no traceback: a restart cannot help until an operator acts
        get_logger("worker.cli").error("no model to serve, exiting", detail=str(exc))
        return 2
    model = start.model
    hot_swap = None
    if settings.hot_swap:
        hot_swap = HotSwap(settings, control, store, model.version, metrics=metrics, health=health)
        for refusal in start.refused:  # not retried every check interval
            if refusal.manifest is not None:
                hot_swap.remember_refusal(refusal.manifest, refusal.reason)
        hot_swap.start()
    normals = NormalSampler(
        store,
        settings.normals_rate,
        rates=settings.normals_rates,
        daily_cap=settings.normals_daily_cap,
        margin=settings.normals_margin,
        metrics=metrics,
    )
    worker = Worker(
        settings,
        model,
        metrics=metrics,
        health=health,
        store=store,
        hot_swap=hot_swap,
        normals=normals,
    )
    worker.install_signal_handlers()
    return worker.run()  # 3: the broker stayed away past KENPIN_BROKER_OUTAGE_DEADLINE_S


if __name__ == "__main__":
    sys.exit(main())
