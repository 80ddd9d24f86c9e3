"""`kenpin-worker`: run the streaming worker, or stream a folder as a camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.topics import FRAMES_TOPIC_PREFIX, frames_topic, parts_topic


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
    cam.add_argument(
        "--part-id-prefix",
        help="send a part id with every frame (kenpin-part-id header): this prefix and the "
        "frame's number, as a PLC's trigger would",
    )
    cam.add_argument(
        "--announce",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also announce each part on the line's parts topic (kenpin.parts.<line>: the "
        "frame's headers, no image), where the PLC bridge reads parts without their images",
    )
    cam.add_argument(
        "--sequence-start",
        type=int,
        help="number the captures from this value (kenpin-sequence header)",
    )
    args = parser.parse_args(argv)

    from pydantic import ValidationError

    from planes.logs import configure_logging
    from planes.settings import settings_problems
    from worker.settings import WorkerSettings

    try:
        settings = WorkerSettings()
    except ValidationError as exc:  # one line an operator can act on, not a traceback
        print(f"kenpin-worker: {settings_problems(exc, WorkerSettings)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)

    if args.command == "camera":
        from kafka.errors import NoBrokersAvailable

        from worker.camera import stream_folder
        from worker.kafka_io import TopicAdmin, make_producer

        # a new line's topic is made on purpose; no client creates one by sending to it
        topics = TopicAdmin(settings, settings.topic_replication)
        try:
            topics.ensure(frames_topic(args.line), args.partitions)
            if args.announce:
                topics.ensure(parts_topic(args.line), args.partitions)
            producer = make_producer(settings, client_id=f"kenpin-camera-{args.camera}")
        except NoBrokersAvailable:
            print(_no_broker(settings), file=sys.stderr)
            return 2
        finally:
            topics.close()
        try:
            sent = stream_folder(
                producer,
                args.line,
                args.source,
                args.fps,
                args.count,
                args.product,
                args.camera,
                part_id_prefix=args.part_id_prefix,
                sequence_start=args.sequence_start,
                announce=args.announce,
            )
        finally:
            producer.close()
        print(f"sent {len(sent)} frames to {frames_topic(args.line)}")
        return 0

    from kafka.errors import NoBrokersAvailable

    from planes.control import ControlAccessDenied, ControlPlane
    from planes.logs import get_logger
    from planes.storage import ObjectStore, StoreAccessDenied
    from worker.hot_swap import HotSwap
    from worker.live_scores import LiveScores
    from worker.metrics import Health, WorkerMetrics, make_app, serve
    from worker.normals import NormalSampler
    from worker.service import Worker
    from worker.startup import NoModelToServe, start_model

    metrics = WorkerMetrics()
    health = Health(
        livez_stall_s=settings.livez_stall_s, startup_grace_s=settings.livez_startup_grace_s
    )
    # probes first: /livez answers while a release downloads, /readyz says "starting"
    serve(make_app(metrics, health), settings.metrics_port, settings.metrics_host)
    store = ObjectStore.from_settings(settings)
    store.on_error = lambda operation: metrics.s3_errors.labels(operation=operation).inc()
    control = ControlPlane.from_settings(settings)
    try:
        # refused credentials or certificates end the start in one line; an outage
        # does not (the worker serves what it has and retries)
        control.check_access()
        store.check_access()
    except (ControlAccessDenied, StoreAccessDenied) as exc:
        print(f"kenpin-worker: {exc}", file=sys.stderr)
        return 2
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
    live_scores = LiveScores(
        control,
        flush_s=settings.live_scores_flush_s,
        ttl_s=settings.evidence_ttl_s,
        metrics=metrics,
    ).start()
    try:
        worker = Worker(
            settings,
            model,
            metrics=metrics,
            health=health,
            store=store,
            hot_swap=hot_swap,
            normals=normals,
            live_scores=live_scores,
        )
    except NoBrokersAvailable:
        # the clients' first request: unreachable, or refused at TLS / SASL
        if hot_swap is not None:
            hot_swap.stop()
        live_scores.stop()
        print(_no_broker(settings), file=sys.stderr)
        return 2
    worker.install_signal_handlers()
    return worker.run()  # 3: the broker stayed away past KENPIN_BROKER_OUTAGE_DEADLINE_S


def _no_broker(settings) -> str:
    """One line for a broker that did not answer the first request: away, or refused at
    TLS / SASL (kafka-python reports both as NoBrokersAvailable)."""
    return (
        f"kenpin-worker: no Kafka broker answered at {settings.kafka_bootstrap} over "
        f"{settings.kafka_security_protocol}: check KENPIN_KAFKA_BOOTSTRAP and the "
        "KENPIN_KAFKA_SECURITY_PROTOCOL / SASL / SSL settings"
    )


if __name__ == "__main__":
    sys.exit(main())
