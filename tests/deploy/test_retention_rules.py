"""Which of Tansu's record batches the local stack's retention deletes (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deploy.local.retention import BATCH_KEY, OFFSET_KEY, Batch, expired

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FRAMES = ("tansu_cluster", "kenpin.frames.l1", 0)


def batches(offsets: list[int], age_s: float, partition=FRAMES) -> list[Batch]:
    return [
        Batch(f"{partition[1]}/{offset}", partition, offset, NOW - timedelta(seconds=age_s))
        for offset in offsets
    ]


def test_old_batches_go_but_the_newest_stays_where_no_group_reads():
    doomed = expired(batches([0, 1, 2, 5], age_s=120), {}, NOW, retention_s=60)
    assert doomed == ["kenpin.frames.l1/0", "kenpin.frames.l1/1", "kenpin.frames.l1/2"]


def test_young_batches_stay():
    assert expired(batches([0, 1, 2], age_s=30), {}, NOW, retention_s=60) == []


def test_a_batch_goes_only_once_every_group_has_read_all_of_it():
    found = batches([0, 4, 8, 12], age_s=120)  # batch 4 holds offsets 4..7
    # one group is at 12, the other (a worker that is down) has read up to 7
    doomed = expired(found, {FRAMES: [12, 8]}, NOW, retention_s=60)
    assert doomed == ["kenpin.frames.l1/0", "kenpin.frames.l1/4"]
    assert expired(found, {FRAMES: [7]}, NOW, retention_s=60) == ["kenpin.frames.l1/0"]
    assert expired(found, {FRAMES: [0]}, NOW, retention_s=60) == []


def test_partitions_are_judged_apart():
    other = ("tansu_cluster", "kenpin.verdicts.l1", 3)
    found = batches([0, 1], age_s=120) + batches([0, 1], age_s=120, partition=other)
    doomed = expired(found, {FRAMES: [0]}, NOW, retention_s=60)
    assert doomed == ["kenpin.verdicts.l1/0"]


def test_the_keys_tansu_writes_are_recognised():
    batch = BATCH_KEY.match(
        "clusters/tansu_cluster/topics/kenpin.frames.l1/partitions/0000000000/records/"
        "00000000000000000841.batch"
    )
    assert batch and batch["topic"] == "kenpin.frames.l1" and int(batch["offset"]) == 841
    offset = OFFSET_KEY.match(
        "clusters/tansu_cluster/groups/consumers/kenpin-workers/offsets/kenpin.frames.l1/"
        "partitions/0000000000.json"
    )
    assert offset and offset["group"] == "kenpin-workers" and int(offset["partition"]) == 0
    assert not BATCH_KEY.match(
        "clusters/tansu_cluster/topics/t/partitions/0000000000/watermark.json"
    )
