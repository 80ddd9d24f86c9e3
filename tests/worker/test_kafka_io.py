"""Kafka client settings and topic helpers; the clients themselves are replaced by fakes."""

import json
from datetime import UTC, datetime

import pytest

from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict
from worker import kafka_io
from worker.settings import WorkerSettings


@pytest.fixture
def settings() -> WorkerSettings:
    return WorkerSettings(kafka_bootstrap="a:9092, b:9092", max_batch=8)


def test_consumer_commits_only_by_hand_and_sees_new_topics_quickly(settings):
    config = kafka_io.consumer_config(settings)
    assert config["enable_auto_commit"] is False
    assert config["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert config["group_id"] == "kenpin-workers"
    assert config["metadata_max_age_ms"] == settings.metadata_max_age_ms <= 10_000
    assert config["auto_offset_reset"] == "earliest"
    assert config["heartbeat_interval_ms"] < config["session_timeout_ms"]
    assert config["max_poll_records"] >= settings.max_batch


def test_producer_waits_for_all_replicas(settings):
    config = kafka_io.producer_config(settings, client_id="w-1")
    assert config["acks"] == "all"
    assert config.get("retries", 1) > 0
    assert config["delivery_timeout_ms"] >= 30_000 + config["linger_ms"]
    assert config["max_request_size"] == settings.kafka_max_message_bytes
    assert config["client_id"] == "w-1"


class FakeConsumer:
    def __init__(self, **config):
        self.config = config
        self.pattern = None
        self.known = {"kenpin.verdicts.l1", "__consumer_offsets"}

    def subscribe(self, topics=(), pattern=None, listener=None):
        self.pattern = pattern

    def topics(self):
        return self.known


def test_frame_consumer_subscribes_only_when_a_line_exists(settings, monkeypatch):
    monkeypatch.setattr(kafka_io, "KafkaConsumer", FakeConsumer)
    consumer = kafka_io.make_frame_consumer(settings)
    assert consumer.pattern is None  # the worker subscribes once a line topic exists
    assert consumer.config["enable_auto_commit"] is False
    assert not kafka_io.has_matching_topic(consumer, settings.frames_topic_pattern)
    consumer.known.add("kenpin.frames.l1")
    assert kafka_io.has_matching_topic(consumer, settings.frames_topic_pattern)


def test_no_client_creates_topics_by_using_them(settings):
    assert kafka_io.consumer_config(settings)["allow_auto_create_topics"] is False
    assert kafka_io.producer_config(settings)["allow_auto_create_topics"] is False


def test_consumer_accepts_network_frames_as_large_as_a_whole_fetch(settings):
    big = settings.model_copy(update={"kafka_max_message_bytes": 64 * 1024 * 1024})
    for s in (settings, big):
        config = kafka_io.consumer_config(s)
        assert config["fetch_max_bytes"] >= s.kafka_max_message_bytes
        assert config["receive_message_max_bytes"] > config["fetch_max_bytes"]


def test_real_kafka_python_accepts_the_configs(settings):
    # Both clients reject unknown options before connecting; with nothing listening
    # on the port they then fail to bootstrap, which is the expected outcome here.
    from kafka.errors import NoBrokersAvailable

    closed = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    for make in (kafka_io.make_frame_consumer, kafka_io.make_producer):
        with pytest.raises(NoBrokersAvailable):
            make(closed, api_version_auto_timeout_ms=200)


class RecordingProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, key, value, headers))
        return "future"


def test_send_verdict_keys_by_camera_on_the_line_topic():
    frame = FrameHeaders(
        frame_id="f",
        line="l1",
        camera="cam-7",
        product="bottle",
        capture_time=datetime(2024, 5, 1, tzinfo=UTC),
        content_type="image/png",
    )
    verdict = Verdict.for_frame(frame, result="ok", score=0.1, threshold=0.5, model_version="v")
    producer = RecordingProducer()
    assert kafka_io.send_verdict(producer, verdict) == "future"
    topic, key, value, _ = producer.sent[0]
    assert (topic, key) == ("kenpin.verdicts.l1", b"cam-7")
    assert Verdict.from_json(value) == verdict


def test_send_dead_letter_keeps_the_original_key():
    letter = DeadLetter.from_record(
        reason=DeadLetterReason.EMPTY_PAYLOAD,
        detail="empty",
        topic="kenpin.frames.l1",
        partition=0,
        offset=5,
        key=b"cam-2",
        value=b"",
        headers=[],
    )
    producer = RecordingProducer()
    kafka_io.send_dead_letter(producer, letter, "kenpin.deadletter")
    topic, key, value, _ = producer.sent[0]
    assert (topic, key) == ("kenpin.deadletter", b"cam-2")
    assert json.loads(value)["reason"] == "empty_payload"
