"""`kenpin-console`: the operators' web page, served by uvicorn.

Reads `KENPIN_CONSOLE_*` (the console) and `KENPIN_*` (where Redis, S3 and the
broker are) from the environment; `--host` / `--port` override the settings.
Exit status 2 when the settings are incomplete (no password) or invalid.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from planes.settings import settings_problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kenpin-console",
        description="The operators' web page: live verdicts, NG gallery, releases, retrains, "
        "workers. Settings: KENPIN_CONSOLE_* (KENPIN_CONSOLE_PASSWORD is required) and the "
        "KENPIN_* variables of the planes.",
    )
    parser.add_argument("--host", help="address to bind (default: KENPIN_CONSOLE_HOST, loopback)")
    parser.add_argument("--port", type=int, help="port (default: KENPIN_CONSOLE_PORT, 8080)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from console.plant_clients import PlantPlanes
    from console.settings import ConsoleSettings
    from operations.plant import AccessDenied

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as exc:
        print(f"kenpin-console: {settings_problems(exc, ConsoleSettings)}", file=sys.stderr)
        return 2
    try:
        planes = PlantPlanes.connect(settings)  # configures logging like the commands
    except AccessDenied as exc:
        print(f"kenpin-console: {exc}", file=sys.stderr)
        return 2

    # imported once logging is configured: their module loggers bind at import
    import uvicorn

    from console.app import create_app
    from console.live import VerdictFeed, VerdictHub
    from planes.logs import get_logger

    hub = VerdictHub(settings.recent_per_line, settings.gallery_size)
    app = create_app(settings, planes, hub, VerdictFeed(settings, hub))
    get_logger(__name__).info(
        "console starting",
        url=f"http://{settings.host}:{settings.port}/",
        read_only_view=settings.read_only_view,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # kenpin's logging, configured above
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,  # event streams never end on their own
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
