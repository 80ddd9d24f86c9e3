"""The normal store seen from the trainer: snapshots, training folders, imports, mark-good.

A snapshot is the sorted list of `normals/` keys with their sizes and ETags,
hashed: the same objects give the same snapshot id, which goes into the
release manifest so a model can be traced to exactly the images it learned.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from planes.storage import ObjectStore, StoredObject
from schemas.frames import CONTENT_TYPE_BY_EXTENSION
from schemas.object_layout import (
    ORIGINAL_INFIX,
    heatmaps_prefix,
    normal_key,
    normals_prefix,
    parse_dated_key,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Snapshot:
    """The normals of one run, per product, split into training and held-out images."""

    snapshot_id: str
    train: dict[str, list[str]] = field(default_factory=dict)
    heldout: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def products(self) -> list[str]:
        return sorted(self.train)

    def summary(self) -> dict:
        return {
            "snapshot_id": self.snapshot_id,
            "products": {
                p: {"train": len(self.train[p]), "heldout": len(self.heldout[p])}
                for p in self.products
            },
            "skipped_products": self.skipped,
        }


def snapshot_id(objects: list[StoredObject]) -> str:
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        digest.update(f"{obj.key}\t{obj.size}\t{obj.etag}\n".encode())
    return digest.hexdigest()


def is_heldout(key: str, fraction: float) -> bool:
    """Held out by a hash of the key: stable across snapshots as the store grows."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def take_snapshot(
    store: ObjectStore,
    holdout_fraction: float,
    max_per_product: int,
    min_per_product: int,
) -> Snapshot:
    """List the normal store and split it; products with too few images are skipped."""
    objects = [
        o
        for o in store.list(normals_prefix())
        if PurePosixPath(o.key).suffix.lower() in CONTENT_TYPE_BY_EXTENSION
    ]
    by_product: dict[str, list[str]] = {}
    for obj in objects:
        parsed = parse_dated_key(obj.key)
        if parsed is not None:  # normals/<product>/<date>/<file>
            by_product.setdefault(parsed.group, []).append(obj.key)
    snap = Snapshot(snapshot_id(objects))
    for product, keys in sorted(by_product.items()):
        keys = sorted(keys)[-max_per_product:]  # keys sort by date: the most recent look
        if len(keys) < min_per_product:
            snap.skipped[product] = len(keys)
            continue
        heldout = [k for k in keys if is_heldout(k, holdout_fraction)]
        train = [k for k in keys if not is_heldout(k, holdout_fraction)]
        if not heldout:  # always measure false alarms on something
            heldout, train = train[-1:], train[:-1]
        if len(train) < 2:
            snap.skipped[product] = len(keys)
            continue
        snap.train[product], snap.heldout[product] = train, heldout
    return snap


def download(store: ObjectStore, snap: Snapshot, root: Path) -> tuple[Path, dict[str, list[Path]]]:
    """Training images into `<root>/train/<product>/train/good/` (MVTec layout) and
    held-out ones into `<root>/heldout/<product>/`; returns the training root and held-out files.
    """
    train_root = Path(root) / "train"
    for product in snap.products:
        folder = train_root / product / "train" / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for key in snap.train[product]:
            (folder / _local_name(key)).write_bytes(store.get(key))
    return train_root, download_heldout(store, snap, root, snap.products)


def download_heldout(
    store: ObjectStore, snap: Snapshot, root: Path, products: Iterable[str]
) -> dict[str, list[Path]]:
    """Held-out images of `products` into `<root>/heldout/<product>/`; the files per product."""
    heldout: dict[str, list[Path]] = {}
    for product in products:
        if product not in snap.heldout:
            continue
        held = Path(root) / "heldout" / product
        held.mkdir(parents=True, exist_ok=True)
        heldout[product] = []
        for key in snap.heldout[product]:
            path = held / _local_name(key)
            path.write_bytes(store.get(key))
            heldout[product].append(path)
    return heldout


def _local_name(key: str) -> str:
    """`normals/p/2024-05-01/f.png` -> `2024-05-01_f.png`: unique, and sorts by date."""
    parsed = parse_dated_key(key)
    if parsed is None:
        raise ValueError(f"{key}: not the key of a normal sample")
    return f"{parsed.day}_{parsed.name}"


def import_folder(
    store: ObjectStore, product: str, folder: Path, day: datetime | None = None
) -> list[str]:
    """Seed the store with a folder's PNG/JPEG images as normals of `product`; returns the keys."""
    when = day or datetime.now(UTC)
    keys = []
    for path in sorted(Path(folder).rglob("*")):
        content_type = CONTENT_TYPE_BY_EXTENSION.get(path.suffix.lower())
        if content_type is None or not path.is_file():
            continue
        # a frame id from the path below the folder, so two good/001.png stay apart
        relative = path.relative_to(folder).with_suffix("")
        frame_id = _UNSAFE.sub("-", "_".join(relative.parts)).lstrip("._-")[:128] or "image"
        key = normal_key(product, when, frame_id, content_type)
        store.put(key, path.read_bytes(), content_type)
        keys.append(key)
    return keys


class FrameNotFound(LookupError):
    """No stored original of that frame (only NG frames are stored beside their heatmap)."""


def mark_good(
    store: ObjectStore,
    frame_id: str,
    *,
    product: str | None = None,
    line: str | None = None,
) -> str:
    """File a flagged frame's original bytes as a normal; returns the new normal's key.

    The original lies beside its heatmap (`heatmaps/<line>/<date>/<id>.original.<ext>`);
    its product is read from the object's metadata unless given.
    """
    prefix = heatmaps_prefix(line)
    originals = [
        o.key
        for o in store.list(prefix)
        if PurePosixPath(o.key).name.startswith(f"{frame_id}{ORIGINAL_INFIX}.")
    ]
    if not originals:
        raise FrameNotFound(f"no stored original of frame {frame_id!r} under {prefix}")
    key = originals[-1]
    product = product or store.metadata(key).get("product")
    if not product:
        raise FrameNotFound(f"{key}: product unknown; pass --product")
    parsed = parse_dated_key(key)
    if parsed is None:
        raise FrameNotFound(f"{key}: not the key of a stored original")
    day = datetime.fromisoformat(parsed.day).replace(tzinfo=UTC)
    content_type = CONTENT_TYPE_BY_EXTENSION[PurePosixPath(key).suffix.lower()]
    target = normal_key(product, day, frame_id, content_type)
    store.put(target, store.get(key), content_type)
    return target
