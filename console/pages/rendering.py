"""The console's Jinja environment: its templates folder, filters, and the globals pages use.

Full pages and the fragments the event streams carry (a line's section, an NG
card, a retrain's status) are rendered by this one environment, so what a page
shows at load and what an event puts in place later cannot differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from console.auth import CSRF_FIELD
from schemas.object_layout import HEATMAP_PREFIX, parse_dated_key

if TYPE_CHECKING:
    from datetime import datetime

    from schemas.verdicts import Verdict

TEMPLATES = Path(__file__).parents[1] / "templates"


def environment() -> Environment:
    """The templates of `console/templates`, HTML autoescaped, with the console's filters."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["stamp"] = stamp
    env.filters["number"] = number
    env.globals["image_url"] = image_url
    env.globals["csrf_field"] = CSRF_FIELD
    return env


def clock(t: datetime | None) -> str:
    return t.strftime("%H:%M:%S") if t else ""


def stamp(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def number(value: Any) -> str:
    """Scores and thresholds in four significant digits; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def image_url(verdict: Verdict, kind: str) -> str | None:
    """The console's URL of a verdict's heatmap or original (never an S3 URL)."""
    parsed = parse_dated_key(verdict.heatmap_key) if verdict.heatmap_key else None
    if parsed is None or parsed.prefix != HEATMAP_PREFIX:
        return None
    return f"/images/{parsed.group}/{parsed.day}/{verdict.frame_id}/{kind}"
