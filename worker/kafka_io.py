"""The data plane: the one module that opens Kafka connections (kafka-python).

Delivery is at least once with idempotent outputs (see docs/architecture.md), and
that is decided here, in the client settings:

- the consumer never commits on its own (`enable_auto_commit=False`): the loop
  commits an offset only after the verdict is acknowledged and the heatmap stored;
- the producer waits for all in-sync replicas (`acks="all"`) and retries until
  its delivery timeout, so an acknowledged verdict survives a broker failure;
- the consumer subscribes by pattern and refreshes metadata every few seconds
  (`metadata_max_age_ms`), so a new line's topic is judged without a restart;
- no client ever creates a topic by using it (`allow_auto_create_topics=False`):
  a frame that names another line cannot conjure that line's verdict topic. The
  topics a worker writes to are created on purpose, by `TopicAdmin`, for the
  lines it reads;
- a consumer group new to a topic starts at its beginning
  (`auto_offset_reset="earliest"`): a new line's first frames are not skipped;
- every client (consumer, producer, admin) reaches the brokers the same way:
  TLS and SASL come from the settings through `planes.kafka.security_config`
  (shared with the console and the PLC bridge), never from code;
- a topic kenpin creates gets its retention and largest record size from the
  settings (`retention.ms`, `max.message.bytes`), sized for full-resolution frames.

Topic names follow `kenpin.frames.<line>` / `kenpin.verdicts.<line>` (the
contract, with its helpers: `schemas.topics`).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

from planes.kafka import fetch_options, security_config
from schemas.deadletters import DeadLetter
from schemas.topics import VERDICTS_TOPIC_PREFIX, verdict_topic
from schemas.verdicts import Verdict, WorkerStages

if TYPE_CHECKING:
    from worker.settings import WorkerSettings


def topic_configs(settings: WorkerSettings) -> dict[str, str]:
    """The configs of a topic kenpin creates: retention and the largest record."""
    return {
        "retention.ms": str(settings.topic_retention_ms),
        "max.message.bytes": str(settings.topic_max_message_bytes),
    }


def consumer_config(settings: WorkerSettings, *, client_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for KafkaConsumer: manual commits, quick discovery of new topics."""
    config: dict[str, Any] = {
        **security_config(settings),
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        # Heartbeats well inside the session timeout, as Kafka recommends (a third).
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 3, 100),
        "metadata_max_age_ms": settings.metadata_max_age_ms,
        # A few batches per poll: enough to fill a micro-batch, few enough that a
        # rebalance does not strand many fetched-but-unjudged frames.
        "max_poll_records": settings.max_batch * 4,
        # kafka-python's consumer default is 305 s: a request lost by a broker (seen
        # with SyncGroup during a rebalance) would stall the line for five minutes.
        # 30 s is the Java client's default; JoinGroup gets its own longer timeout.
        "request_timeout_ms": max(30_000, settings.session_timeout_ms + 5_000),
        **fetch_options(settings),
        "allow_auto_create_topics": False,
    }
    if client_id:
        config["client_id"] = client_id
    return config


def producer_config(settings: WorkerSettings, *, client_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for KafkaProducer: durable acks, retries, small batching delay."""
    config: dict[str, Any] = {
        **security_config(settings),
        "acks": "all",
        # Retries are left at the client's default, within delivery_timeout_ms. No
        # idempotent producer: kafka-python 2.3 cannot do it against every broker we
        # run (Tansu answers UnknownError), and it is not needed: verdicts are keyed
        # by frame id, and a duplicate from a retry is a replay the PLC side ignores.
        "delivery_timeout_ms": 60_000,
        # Full-resolution PNG frames exceed the 1 MB client default; the broker's
        # message.max.bytes must allow the same size.
        "max_request_size": settings.kafka_max_message_bytes,
        # Verdicts of one batch leave together; 5 ms is small against the batch wait.
        "linger_ms": 5,
        "metadata_max_age_ms": settings.metadata_max_age_ms,
        "allow_auto_create_topics": False,
        # A send blocks the loop while the topic's metadata is unknown (the broker is
        # away): fail it after 10 s and retry, instead of freezing for the 60 s default.
        "max_block_ms": 10_000,
    }
    if client_id:
        config["client_id"] = client_id
    return config


def make_frame_consumer(
    settings: WorkerSettings, *, client_id: str | None = None, **overrides: Any
) -> KafkaConsumer:
    """A consumer in the worker group, not yet subscribed (see `has_matching_topic`).

    `overrides` are extra KafkaConsumer options (e.g. `bootstrap_timeout_ms` in tests).
    """
    return KafkaConsumer(**(consumer_config(settings, client_id=client_id) | overrides))


def has_matching_topic(consumer: KafkaConsumer, pattern: str) -> bool:
    """Whether the broker has a topic matching `pattern` (one metadata request).

    A worker subscribes only once this is true: a pattern subscription that joins
    its group while nothing matches never got its first line's partitions from
    Tansu (the re-join after the topic appeared was never answered), so a fresh
    plant's first line was not judged until a restart.
    """
    regex = re.compile(pattern)
    return any(regex.match(topic) for topic in consumer.topics())


class TopicAdmin:
    """Creates the topics a worker writes to, on purpose, for the lines it reads.

    Idempotent: a topic that exists (made by another worker or by the plant's
    operators, with their own partitions, replication and configs) is left as it is.
    A new one gets `topic_configs` (retention, largest record).
    """

    def __init__(self, settings: WorkerSettings, replication: int = 1) -> None:
        self.settings = settings
        self.replication = replication
        self._admin: KafkaAdminClient | None = None
        self._known: set[str] = set()

    def ensure(self, topic: str, partitions: int) -> None:
        """Create `topic` unless it exists; raises KafkaError when the broker cannot say."""
        if topic in self._known:
            return
        if self._admin is None:
            self._admin = KafkaAdminClient(**security_config(self.settings))
        new = NewTopic(
            topic,
            num_partitions=max(1, partitions),
            replication_factor=self.replication,
            topic_configs=topic_configs(self.settings),
        )
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
            self._admin.create_topics([new])
        self._known.add(topic)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def make_producer(
    settings: WorkerSettings, *, client_id: str | None = None, **overrides: Any
) -> KafkaProducer:
    """A producer for verdicts, dead letters and (in the camera simulator) frames.

    `overrides` are extra KafkaProducer options.
    """
    return KafkaProducer(**(producer_config(settings, client_id=client_id) | overrides))


def send_verdict(
    producer: KafkaProducer,
    verdict: Verdict,
    prefix: str = VERDICTS_TOPIC_PREFIX,
    stages: WorkerStages | None = None,
) -> FutureRecordMetadata:
    """Publish `verdict` to its line's topic, keyed by camera so a camera's verdicts stay ordered.

    `stages` go in the record's `kenpin-stages` header. Returns the send future; the
    loop waits on it before committing the frame's offset.
    """
    return producer.send(
        verdict_topic(verdict.line, prefix),
        key=verdict.camera.encode(),
        value=verdict.to_json(),
        headers=[stages.to_kafka_header()] if stages is not None else None,
    )


def send_dead_letter(
    producer: KafkaProducer, dead_letter: DeadLetter, topic: str
) -> FutureRecordMetadata:
    """Publish `dead_letter`, keyed like the original record (its camera id, if it had one)."""
    return producer.send(topic, key=dead_letter.original_key, value=dead_letter.to_json())
