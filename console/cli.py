"""`kenpin-console`: the operators' web page, served by uvicorn.

Reads `KENPIN_CONSOLE_*` (the console) and `KENPIN_*` (where Redis, S3 and the
broker are) from the environment; `--host` / `--port` override the settings.
Exit status 2 when the settings are incomplete (no password) or invalid.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from schemas.settings import ENV_PREFIX


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

    from console.planes import PlantPlanes
    from console.settings import CONSOLE_ENV_PREFIX, ConsoleSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as exc:
        print(f"kenpin-console: {_problems(exc, CONSOLE_ENV_PREFIX)}", file=sys.stderr)
        return 2
    planes = PlantPlanes.connect()  # reads KENPIN_*, configures logging like the commands

    # imported once logging is configured: their module loggers bind at import
    import uvicorn

    from console.app import create_app
    from console.live import VerdictFeed, VerdictHub
    from worker.logs import get_logger

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


def _problems(exc: ValidationError, prefix: str) -> str:
    """A settings error in one line, by environment variable (what an operator sets)."""

    def variable(error: dict) -> str:
        name = str(error["loc"][0]).upper() if error["loc"] else "SETTINGS"
        # fields read from the planes' shared variables carry their full name as alias
        return name if name.startswith(ENV_PREFIX) else f"{prefix}{name}"

    missing = [variable(e) for e in exc.errors() if e["type"] == "missing"]
    if missing:
        return "set " + ", ".join(missing)
    return "invalid settings: " + "; ".join(f"{variable(e)}: {e['msg']}" for e in exc.errors())


if __name__ == "__main__":
    raise SystemExit(main())
