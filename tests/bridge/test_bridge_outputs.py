"""What the PLC reads: OPC UA values of an outcome, the login check, the Kafka records read."""

import json
import math
from datetime import UTC, datetime
from types import SimpleNamespace

from kafka.structs import TopicPartition

from bridge.deadlines import DeadLetterArrived, FrameSeen, LineState, VerdictArrived
from bridge.kafka_source import KafkaSource, consumer_config
from bridge.opcua_server import (
    LINE_VARIABLES,
    RECENT,
    PasswordUsers,
    counter_values,
    outcome_values,
    recent_values,
)
from bridge.outcome import Outcome
from bridge.settings import BridgeSettings
from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def test_outcome_values_cover_every_variable_but_the_counters_and_use_plc_friendly_blanks():
    timeout = Outcome(
        line="l1",
        sequence=7,
        verdict="TIMEOUT",
        frame_id="f1",
        part_id=None,
        capture_sequence=None,
        reason="deadline",
        published_time=NOW,
        waited_ms=501.0,
        deadline_ms=500.0,
    )
    values = outcome_values(timeout)
    counters = set(counter_values(LineState("l1")))  # the line's, written apart
    ring = {n for n in LINE_VARIABLES if n.startswith("Recent")}
    assert set(values) == set(LINE_VARIABLES) - counters - ring - {"Sequence"}
    assert list(LINE_VARIABLES)[-1] == "Sequence"  # written last
    assert (values["LastVerdict"], values["Pass"], values["PartId"]) == ("TIMEOUT", False, "")
    assert values["CaptureSequence"] == -1 and math.isnan(values["Score"])
    assert json.loads(values["Json"])["sequence"] == 7
    ok = timeout.model_copy(update={"verdict": "OK", "score": 0.1, "threshold": 0.5})
    assert outcome_values(ok)["Pass"] is True


def test_the_ring_of_recent_outcomes_is_newest_first_and_fixed_size():
    outcomes = [
        Outcome(
            line="l1",
            sequence=n,
            verdict="OK",
            frame_id=f"f{n}",
            part_id=f"P{n}",
            capture_sequence=n,
            published_time=NOW,
            deadline_ms=500.0,
        )
        for n in range(1, RECENT + 3)
    ]
    ring = recent_values(outcomes[:2])
    assert ring["RecentSequence"] == [2, 1] + [0] * (RECENT - 2)
    assert ring["RecentPartId"][:3] == ["P2", "P1", ""]
    full = recent_values(outcomes)
    assert len(full["RecentVerdict"]) == RECENT
    assert full["RecentSequence"][0] == RECENT + 2 and full["RecentSequence"][-1] == 3


def test_only_the_configured_user_with_its_password_gets_in():
    users = PasswordUsers("plc", "s3cret", allow_anonymous=False)
    assert users.get_user(None, username="plc", password="s3cret") is not None
    assert users.get_user(None, username="plc", password="s3cre") is None
    assert users.get_user(None, username="admin", password="s3cret") is None
    assert users.get_user(None) is None
    assert PasswordUsers("plc", "", allow_anonymous=True).get_user(None) is not None
    assert PasswordUsers("plc", "", allow_anonymous=True).get_user(None, "plc", "") is None


def part_f1() -> FrameHeaders:
    """The headers of part P1's frame f1 on line l1."""
    return FrameHeaders(
        frame_id="f1",
        line="l1",
        camera="cam-1",
        product="washer",
        capture_time=NOW,
        content_type="image/png",
        part_id="P1",
        sequence=1,
    )


def record(topic: str, offset: int, value: bytes = b"", headers=None):
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value, headers=headers)


def test_kafka_records_become_events_frames_first():
    settings = BridgeSettings(deadletter_topic="kenpin.deadletter")
    source = KafkaSource(settings, deliver=lambda events: None)
    frame = part_f1()
    verdict = Verdict.for_frame(frame, result="ok", score=0.1, threshold=0.5, model_version="m")
    letter = DeadLetter.from_record(
        reason=DeadLetterReason.CORRUPT_IMAGE,
        detail="bad",
        topic="kenpin.frames.l1",
        partition=0,
        offset=3,
        key=None,
        value=b"x",
        headers=[],
    )
    foreign = letter.model_copy(update={"source_topic": "elsewhere.l9"})
    polled = {
        TopicPartition("kenpin.verdicts.l1", 0): [
            record("kenpin.verdicts.l1", 0, verdict.to_json()),
            record("kenpin.verdicts.l1", 1, b"not json"),
        ],
        TopicPartition("kenpin.deadletter", 0): [
            record("kenpin.deadletter", 0, letter.to_json()),
            record("kenpin.deadletter", 1, foreign.to_json()),
        ],
        TopicPartition("kenpin.frames.l1", 0): [
            record("kenpin.frames.l1", 2, b"\x89PNG", frame.to_kafka_headers()),
            record("kenpin.frames.l1", 3, b"\x89PNG", [("kenpin-part-id", b"P2")]),
        ],
    }
    events = source.events(polled, seen_at=1.0)
    assert [type(e) for e in events] == [FrameSeen, FrameSeen, VerdictArrived, DeadLetterArrived]
    parsed, broken = events[0], events[1]
    assert (parsed.frame_id, parsed.part_id, parsed.capture_sequence) == ("f1", "P1", 1)
    assert (broken.frame_id, broken.part_id, broken.where) == (None, "P2", "kenpin.frames.l1/0/3")
    assert events[2].verdict.part_id == "P1" and events[3].line == "l1"


def test_the_consumer_reads_live_data_without_a_group():
    config = consumer_config(BridgeSettings(kafka_bootstrap="a:1, b:2"))
    assert config["bootstrap_servers"] == ["a:1", "b:2"]
    assert config["group_id"] is None and config["enable_auto_commit"] is False
    assert config["auto_offset_reset"] == "latest"
    assert config["allow_auto_create_topics"] is False


class FakeConsumer:
    """The few KafkaConsumer calls `discover` makes, recorded."""

    def __init__(self, topics: dict[str, int]):
        self.topic_partitions = topics
        self.calls: list[tuple] = []

    def topics(self):
        return set(self.topic_partitions)

    def partitions_for_topic(self, topic):
        return set(range(self.topic_partitions[topic]))

    def assign(self, partitions):
        self.calls.append(("assign", tuple(partitions)))

    def seek_to_end(self, *partitions):
        self.calls.append(("end", tuple(sorted(partitions))))

    def seek_to_beginning(self, *partitions):
        self.calls.append(("beginning", tuple(sorted(partitions))))

    def position(self, partition, timeout_ms=None):
        self.calls.append(("position", partition))
        return 0


def test_existing_partitions_are_read_from_their_end_new_ones_from_their_beginning():
    consumer = FakeConsumer({"kenpin.frames.l1": 2, "kenpin.verdicts.l1": 1, "other.x": 1})
    reported = []
    source = KafkaSource(
        BridgeSettings(metadata_max_age_ms=100),
        deliver=lambda events: None,
        on_partitions=lambda count, lines: reported.append((count, lines)),
        consumer=consumer,
    )
    source.discover()
    first = [c for c in consumer.calls if c[0] in ("end", "beginning")]
    assert first == [
        (
            "end",
            (
                TopicPartition("kenpin.frames.l1", 0),
                TopicPartition("kenpin.frames.l1", 1),
                TopicPartition("kenpin.verdicts.l1", 0),
            ),
        )
    ]
    assert sum(c[0] == "position" for c in consumer.calls) == 3  # resolved before "reading"
    assert reported == [(3, {"l1"})]
    consumer.topic_partitions["kenpin.frames.l2"] = 1
    consumer.calls.clear()
    source._next_discovery = 0.0
    source.discover()
    assert ("beginning", (TopicPartition("kenpin.frames.l2", 0),)) in consumer.calls
    assert reported[-1] == (4, {"l1", "l2"})


def test_a_line_with_a_parts_topic_is_read_there_and_never_from_its_frames():
    topics = {"kenpin.frames.l1": 2, "kenpin.parts.l1": 2, "kenpin.frames.l2": 1}
    consumer = FakeConsumer(topics | {"kenpin.verdicts.l1": 1})
    source = KafkaSource(BridgeSettings(), deliver=lambda events: None, consumer=consumer)
    source.discover()
    assert {tp.topic for tp in source.assigned} == {
        "kenpin.parts.l1",  # l1's cameras announce: its images are never fetched
        "kenpin.frames.l2",  # l2's do not: its frames are read for their headers
        "kenpin.verdicts.l1",
    }
    consumer.topic_partitions["kenpin.parts.l2"] = 1  # l2 gains one: read there from now on
    source._next_discovery = 0.0
    source.discover()
    assert "kenpin.frames.l2" not in {tp.topic for tp in source.assigned}
    assert ("beginning", (TopicPartition("kenpin.parts.l2", 0),)) in consumer.calls


def test_an_announced_part_is_seen_as_its_frame_and_an_unreadable_one_is_skipped():
    source = KafkaSource(BridgeSettings(), deliver=lambda events: None)
    frame = part_f1()
    polled = {
        TopicPartition("kenpin.parts.l1", 0): [
            record("kenpin.parts.l1", 0, b"", frame.to_kafka_headers()),
            record("kenpin.parts.l1", 1, b"", [("kenpin-part-id", b"P2")]),
        ]
    }
    [seen] = source.events(polled, seen_at=1.0)
    assert isinstance(seen, FrameSeen)
    assert (seen.line, seen.frame_id, seen.part_id, seen.capture_time) == ("l1", "f1", "P1", NOW)
