"""The S3 contract: where kenpin keeps what objects in its bucket.

Three top-level prefixes, each written by one kind of process:

- `models/<version>/`: one release, written once by the trainer (or an
  operator) and never changed: `manifest.json` (a
  `schemas.manifest.ModelManifest`) and the files it lists, each under its
  plain name (`models/<version>/<file name>`, e.g. `model.safetensors`). The
  files are uploaded before the manifest, and the manifest before the release
  is made current in Redis, so a worker hearing of a release finds all of it.
- `heatmaps/<line>/<YYYY-MM-DD>/`: written by the workers for every NG frame:
  `<frame id>.png`, the anomaly map over the frame, and beside it
  `<frame id>.original.<ext>`, the camera's original bytes (`.png`, `.jpg`),
  whose object metadata names the product.
- `normals/<product>/<YYYY-MM-DD>/<frame id>.<ext>`: confident OK frames the
  workers sample, the camera's original bytes; the trainer retrains on them.

Dates are the frame's capture date in UTC, never the time a worker ran, so a
replayed frame overwrites its object instead of adding one. Frame ids, lines and
products are `schemas.common.Name`s (no `/`), so every key has exactly the depth
shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NamedTuple

from schemas.frames import EXTENSION_BY_CONTENT_TYPE

MODELS_PREFIX = "models"
HEATMAP_PREFIX = "heatmaps"
NORMALS_PREFIX = "normals"
#: The manifest of a release (and of an artifact folder on disk).
MANIFEST_FILE = "manifest.json"
#: The infix between a frame id and the extension of the original stored beside its heatmap.
ORIGINAL_INFIX = ".original"


# --- releases ------------------------------------------------------------------------


def release_prefix(version: str) -> str:
    """`models/<version>`: where a release's manifest and files live."""
    return f"{MODELS_PREFIX}/{version}"


def release_key(version: str, name: str) -> str:
    """`models/<version>/<name>`: one file of a release (its manifest: `MANIFEST_FILE`)."""
    return f"{release_prefix(version)}/{name}"


def releases_prefix() -> str:
    """`models/`: lists every release's objects."""
    return f"{MODELS_PREFIX}/"


# --- heatmaps and the originals beside them ------------------------------------------


def heatmap_key(line: str, capture_time: datetime, frame_id: str) -> str:
    """`heatmaps/<line>/<YYYY-MM-DD>/<frame_id>.png`, dated by the frame's capture (UTC)."""
    return f"{_dated(HEATMAP_PREFIX, line, capture_time)}/{frame_id}.png"


def frame_key(line: str, capture_time: datetime, frame_id: str, content_type: str) -> str:
    """Key of the original frame beside its heatmap: `.../<frame_id>.original.<ext>`.

    The `.original` infix keeps a PNG frame from overwriting its own PNG heatmap.
    """
    extension = EXTENSION_BY_CONTENT_TYPE[content_type]
    return f"{_dated(HEATMAP_PREFIX, line, capture_time)}/{frame_id}{ORIGINAL_INFIX}{extension}"


def heatmaps_prefix(line: str | None = None) -> str:
    """`heatmaps/` (every line) or `heatmaps/<line>/`: lists heatmaps and originals."""
    return f"{HEATMAP_PREFIX}/{line}/" if line else f"{HEATMAP_PREFIX}/"


# --- normal samples ------------------------------------------------------------------


def normal_key(product: str, capture_time: datetime, frame_id: str, content_type: str) -> str:
    """`normals/<product>/<YYYY-MM-DD>/<frame_id>.<ext>`; a replay overwrites, never adds."""
    folder = _dated(NORMALS_PREFIX, product, capture_time)
    return f"{folder}/{frame_id}{EXTENSION_BY_CONTENT_TYPE[content_type]}"


def normals_prefix() -> str:
    """`normals/`: lists every normal sample."""
    return f"{NORMALS_PREFIX}/"


# --- reading keys back ---------------------------------------------------------------


class DatedKey(NamedTuple):
    """The parts of a `<prefix>/<line or product>/<YYYY-MM-DD>/<file>` key."""

    prefix: str
    group: str  # the line (heatmaps) or the product (normals)
    day: str  # YYYY-MM-DD
    name: str


#: What a stored frame-derived object is, for retention: each kind has its own.
ObjectKind = Literal["heatmap", "original", "normal"]
#: The top-level prefix each kind lives under.
KIND_PREFIXES: dict[str, str] = {
    "heatmap": f"{HEATMAP_PREFIX}/",
    "original": f"{HEATMAP_PREFIX}/",
    "normal": f"{NORMALS_PREFIX}/",
}


def object_kind(key: str) -> ObjectKind | None:
    """The retention kind of a key: a heatmap, the original beside it, a normal; else None.

    Heatmaps and originals share a folder, so S3 lifecycle rules tell them apart by
    an object tag carrying this kind, not by prefix.
    """
    dated = parse_dated_key(key)
    if dated is None:
        return None
    if dated.prefix == NORMALS_PREFIX:
        return "normal"
    if dated.prefix == HEATMAP_PREFIX:
        return "original" if ORIGINAL_INFIX in dated.name else "heatmap"
    return None


def parse_dated_key(key: str) -> DatedKey | None:
    """A heatmap, original or normal key split into its parts; None for any other depth."""
    parts = key.split("/")
    return DatedKey(*parts) if len(parts) == 4 else None


def _dated(prefix: str, group: str, capture_time: datetime) -> str:
    if capture_time.tzinfo is None:
        raise ValueError("capture_time must be timezone-aware; the date is taken in UTC")
    day = capture_time.astimezone(UTC).date().isoformat()
    return f"{prefix}/{group}/{day}"
