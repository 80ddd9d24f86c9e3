"""Retention for the local broker: Tansu keeps every record batch in S3 and never deletes one.

Tansu 0.6 (S3 storage) writes one object per record batch,
``clusters/<cluster>/topics/<topic>/partitions/<p>/records/<offset>.batch``, and
lists *all* of a partition's batches for every fetch. It ignores ``retention.ms``
and drops the connection on DeleteRecords. So a partition's fetches slow down
with every record it ever held, and once it holds about a thousand batches (the
S3 listing's first page), consumers fall seconds behind: a line at 7 parts/s
gets there in under three minutes.

This sweeper is the retention Tansu lacks, for the local stack only (plants run
Apache Kafka): every few seconds it lists the broker's bucket and deletes the
batches that are

- older than the retention (the object's last-modified time), and
- fully consumed by *every* consumer group that has committed an offset on the
  partition (the batch's records all lie below each group's committed offset),
  so a worker that is down keeps its frames however long it is away, and
- not the partition's newest batch.

Tansu copes with a missing batch as Kafka does with a deleted segment: the
earliest offset moves up, and a fetch below it is answered from the first batch
left. Its high watermark lives in a separate ``watermark.json``, which is never
touched. A group that stopped consuming pins its partitions until it is deleted;
partitions no group reads (verdicts, parts: the bridge reads without a group)
are trimmed by age alone.

    python -m deploy.local.retention --state-dir .stack --retention-s 60

``LocalStack(broker_retention_s=...)`` and ``kenpin-stack up --broker-retention-s``
start it beside Tansu.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["Batch", "expired", "main", "sweep"]

log = logging.getLogger(__name__)

BATCH_KEY = re.compile(
    r"^clusters/(?P<cluster>[^/]+)/topics/(?P<topic>[^/]+)/partitions/(?P<partition>\d+)"
    r"/records/(?P<offset>\d+)\.batch$"
)
OFFSET_KEY = re.compile(
    r"^clusters/(?P<cluster>[^/]+)/groups/consumers/(?P<group>[^/]+)/offsets/(?P<topic>[^/]+)"
    r"/partitions/(?P<partition>\d+)\.json$"
)

Partition = tuple[str, str, int]  # cluster, topic, partition


@dataclass(frozen=True)
class Batch:
    """One record batch object: its key, partition, first offset and when it was written."""

    key: str
    partition: Partition
    offset: int
    modified: datetime


def expired(
    batches: Iterable[Batch],
    committed: dict[Partition, list[int]],
    now: datetime,
    retention_s: float,
) -> list[str]:
    """The keys of the batches to delete (see the module doc for the three rules).

    A batch holds the offsets from its own up to the next batch's, so it is fully
    consumed by a group when the next batch's offset is at most the group's
    committed offset (the next offset the group will read).
    """
    cutoff = now - timedelta(seconds=retention_s)
    by_partition: dict[Partition, list[Batch]] = {}
    for batch in batches:
        by_partition.setdefault(batch.partition, []).append(batch)
    doomed = []
    for partition, found in by_partition.items():
        found.sort(key=lambda b: b.offset)
        floor = min(committed.get(partition, ()), default=None)
        for batch, following in zip(found, found[1:], strict=False):
            if batch.modified >= cutoff:
                continue
            if floor is not None and following.offset > floor:
                break  # this one and every later batch still hold unconsumed records
            doomed.append(batch.key)
    return doomed


def sweep(client, bucket: str, retention_s: float, now: datetime | None = None) -> int:
    """One pass over the broker's bucket; returns how many batches were deleted."""
    from minio.deleteobjects import DeleteObject

    batches, committed = [], {}
    for item in client.list_objects(bucket, prefix="clusters/", recursive=True):
        name = item.object_name
        if match := BATCH_KEY.match(name):
            partition = (match["cluster"], match["topic"], int(match["partition"]))
            batches.append(Batch(name, partition, int(match["offset"]), item.last_modified))
        elif match := OFFSET_KEY.match(name):
            partition = (match["cluster"], match["topic"], int(match["partition"]))
            response = client.get_object(bucket, name)
            try:
                offset = json.loads(response.read())["offset"]
            finally:
                response.close()
                response.release_conn()
            committed.setdefault(partition, []).append(int(offset))
    doomed = expired(batches, committed, now or datetime.now(UTC), retention_s)
    if doomed:
        errors = list(client.remove_objects(bucket, (DeleteObject(k) for k in doomed)))
        for error in errors:
            log.warning("could not delete %s: %s", error.name, error.message)
        return len(doomed) - len(errors)
    return 0


def run(client, bucket: str, retention_s: float, every_s: float, stop: threading.Event) -> None:
    """Sweep every `every_s` until `stop`; an S3 outage is logged and waited out."""
    while not stop.wait(every_s):
        try:
            deleted = sweep(client, bucket, retention_s)
        except Exception as exc:  # the S3 server may be restarting: try again next time
            log.warning("retention sweep failed: %r", exc)
            continue
        if deleted:
            log.info("deleted %d record batches older than %g s", deleted, retention_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the stack's state dir")
    parser.add_argument("--retention-s", type=float, required=True, help="keep batches this long")
    parser.add_argument("--every-s", type=float, default=5.0, help="seconds between sweeps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from minio import Minio

    from .stack import BROKER_BUCKET, LocalStack

    stack = LocalStack(args.state_dir)
    settings = stack.settings
    client = Minio(
        stack.broker_s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("keeping record batches for %g s, sweeping every %g s", args.retention_s, args.every_s)
    run(client, BROKER_BUCKET, args.retention_s, args.every_s, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
