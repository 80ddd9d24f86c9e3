"""Structured logs: JSON lines for the log shipper in production, readable text on a terminal.

Every event is a dict (`log.info("batch_judged", frames=16, ms=12.5)`), so the
fields stay machine-searchable. Libraries that use the standard `logging`
module (kafka-python, urllib3) are routed through the same renderer, so a
process's output (worker, trainer, bridge, console) is one consistent stream.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

#: Chatty libraries: their INFO lines (connections, sessions) drown a process's own events.
QUIET_LIBRARIES = ("kafka", "urllib3", "asyncua", "paho")


def resolve_format(log_format: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    """`auto` means console when a person is watching (a TTY), JSON otherwise."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure_logging(
    log_format: LogFormat = "auto", level: str = "INFO", stream: IO[str] | None = None
) -> Literal["json", "console"]:
    """Configure structlog and stdlib logging for the whole process; returns the format used.

    Call once at start-up; calling again replaces the previous configuration
    (tests rely on that).
    """
    stream = stream or sys.stderr
    chosen = resolve_format(log_format, stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if chosen == "json":
        renderer: Any = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors_available(stream))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return chosen


def get_logger(name: str | None = None, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger bound to `context` (e.g. `line="l1"`); events carry those fields."""
    return structlog.stdlib.get_logger(name).bind(**context)


def _colors_available(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
