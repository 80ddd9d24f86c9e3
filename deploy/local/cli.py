"""``kenpin-stack``: run the embedded local stack from a shell.

    eval "$(kenpin-stack up)"     # start detached, export the KENPIN_* settings
    kenpin-stack env              # print the exports of the running stack again
    kenpin-stack down [--purge]   # stop it (and delete its data)

Only the ``export`` lines go to stdout, so ``eval "$(...)"`` works; progress
and errors go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .binaries import MissingBinaryError
from .stack import (
    DEFAULT_STATE_DIR,
    LocalStack,
    StackAlreadyRunningError,
    StackNotRunningError,
    StackStartError,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kenpin-stack",
        description="Local Kafka-API broker (Tansu), S3 (SeaweedFS) and Redis for kenpin.",
    )
    parser.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE_DIR),
        help="where pids, ports, credentials, logs and data live (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack detached and print its settings")
    up.add_argument("--bucket", default="kenpin", help="kenpin's S3 bucket (default: %(default)s)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per server")
    up.add_argument(
        "--broker-storage",
        choices=["s3", "memory"],
        default="s3",
        help="where Tansu keeps topics: in SeaweedFS (durable, default) or in memory",
    )
    up.add_argument(
        "--broker-retention-s",
        type=float,
        help="with S3 storage: delete record batches every consumer group has read and that "
        "are older than this (Tansu applies no retention; its fetches slow down with every "
        "batch a partition holds); default: keep all",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve Redis and S3 over TLS with a CA made for this stack (in the state "
        "directory); the exports name it as KENPIN_REDIS_CA_FILE and KENPIN_S3_CA_FILE",
    )
    down = commands.add_parser("down", help="stop the stack (idempotent)")
    down.add_argument("--purge", action="store_true", help="also delete data, logs, credentials")
    env = commands.add_parser("env", help="print the export lines of the running stack")
    # Let the global option also follow the subcommand: `kenpin-stack up --state-dir D`.
    for sub in (up, down, env):
        sub.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kenpin-stack`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # Our progress at INFO; the clients' own chatter (kafka-python logs every
    # connection at INFO) only when it is a warning.
    logging.basicConfig(
        level=logging.WARNING, format="kenpin-stack: %(message)s", stream=sys.stderr
    )
    logging.getLogger("deploy.local").setLevel(logging.INFO)
    try:
        if args.command == "up":
            stack = LocalStack(
                args.state_dir,
                bucket=args.bucket,
                startup_timeout_s=args.timeout,
                broker_storage=args.broker_storage,
                tls=args.tls,
                broker_retention_s=args.broker_retention_s,
            )
            try:
                settings = stack.up()
            except StackAlreadyRunningError:
                print(f"kenpin-stack: already running in {stack.state_dir}", file=sys.stderr)
                settings = stack.settings
            print(settings.export_lines())
        elif args.command == "down":
            LocalStack(args.state_dir).down(purge=args.purge)
        else:
            print(LocalStack(args.state_dir).settings.export_lines())
    except (MissingBinaryError, StackStartError, StackNotRunningError) as exc:
        print(f"kenpin-stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
