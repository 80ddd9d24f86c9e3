"""The live hub: recent verdicts per line, the NG gallery, replays, and fan-out to streams."""

from __future__ import annotations

import asyncio
import threading

from console.live import SUBSCRIBER_QUEUE, VerdictFeed, VerdictHub
from tests.console.conftest import console_settings, verdict


def test_a_replayed_verdict_replaces_its_first_copy_and_counts_once():
    hub = VerdictHub(recent_per_line=3, gallery_size=2)
    for frame in ("a", "b", "c", "d"):
        hub.add(verdict(frame, result="ok"))
    hub.add(verdict("b", result="ok"))  # a replay of a frame that is still listed
    recent, ok, ng = hub.lines()["l1"]
    assert [v.frame_id for v in recent] == ["b", "d", "c"]
    assert (ok, ng) == (4, 0)


def test_the_gallery_keeps_the_newest_ng_frames_of_every_line():
    hub = VerdictHub(gallery_size=2)
    hub.add(verdict("n1", line="l1"))
    hub.add(verdict("ok1", result="ok", line="l1"))
    hub.add(verdict("n2", line="l2"))
    hub.add(verdict("n3", line="l1"))
    assert [v.frame_id for v in hub.gallery()] == ["n3", "n2"]
    assert sorted(hub.lines()) == ["l1", "l2"]
    assert hub.find("ok1") is not None and hub.find("zz") is None


def test_verdicts_from_another_thread_reach_every_subscriber():
    hub = VerdictHub()

    async def watch() -> list[list[str]]:
        async with hub.subscribe() as first, hub.subscribe() as second:
            assert hub.subscriber_count == 2
            writer = threading.Thread(target=lambda: [hub.add(verdict(f)) for f in "xyz"])
            writer.start()
            got = []
            for queue in (first, second):
                got.append([(await asyncio.wait_for(queue.get(), 10)).frame_id for _ in "xyz"])
            writer.join()
        assert hub.subscriber_count == 0
        return got

    assert asyncio.run(watch()) == [["x", "y", "z"], ["x", "y", "z"]]


def test_a_stalled_subscriber_loses_its_oldest_verdicts_not_the_newest():
    hub = VerdictHub()

    async def stall() -> tuple[int, str]:
        async with hub.subscribe() as queue:
            for k in range(SUBSCRIBER_QUEUE + 5):
                hub.add(verdict(f"f{k}"))
            await asyncio.sleep(0)  # let the loop run the queued puts
            await asyncio.sleep(0)
            first = queue.get_nowait().frame_id
            return queue.qsize() + 1, first

    size, first = asyncio.run(stall())
    assert size == SUBSCRIBER_QUEUE
    assert first == "f5"


def test_the_feed_reads_only_the_lines_of_its_prefix():
    feed = VerdictFeed(console_settings(line_prefix="hallA-"), VerdictHub())
    assert feed.pattern.match("kenpin.verdicts.hallA-l1")
    assert not feed.pattern.match("kenpin.verdicts.hallB-l1")
    assert not feed.pattern.match("kenpin.frames.hallA-l1")
    every = VerdictFeed(console_settings(), VerdictHub())
    assert every.pattern.match("kenpin.verdicts.l1") and not every.pattern.match(
        "kenpin.deadletter"
    )


def test_the_feed_reaches_the_brokers_as_the_workers_do(monkeypatch):
    import pytest
    from pydantic import ValidationError

    from console.settings import ConsoleSettings
    from worker.kafka_io import security_config

    monkeypatch.setenv("KENPIN_KAFKA_BOOTSTRAP", "b1:9093,b2:9093")
    monkeypatch.setenv("KENPIN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_USERNAME", "console")
    monkeypatch.setenv("KENPIN_KAFKA_SASL_PASSWORD", "s3cret")
    config = security_config(ConsoleSettings(password="x"))
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "s3cret"
    monkeypatch.delenv("KENPIN_KAFKA_SASL_PASSWORD")
    with pytest.raises(ValidationError, match="kafka_sasl_password"):
        ConsoleSettings(password="x")
