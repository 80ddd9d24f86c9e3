"""Every knob of a worker in one place, read from `KENPIN_*` environment variables.

One class, so an operator can see the whole configuration surface of a worker
in a single file and a deployment manifest can set any of it without code; how
every kenpin process reaches Kafka, Redis and S3, and how it logs, is declared
once in the plane blocks it mixes in (`planes.settings`). Credentials are
`SecretStr`: they never show up in logs or reprs.

Example: ``KENPIN_KAFKA_BOOTSTRAP=broker:9092 KENPIN_DEVICE=cuda kenpin-worker``.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator

from model.images import DEFAULT_MAX_PIXELS
from model.runtimes import RUNTIMES, Device, Precision, RuntimeChoice, check_choice
from planes.settings import KafkaSettings, PlaneSettings
from schemas.object_layout import MANIFEST_FILE
from schemas.redis_keys import CURRENT_KEY
from schemas.topics import (
    CONSUMER_GROUP,
    DEADLETTER_TOPIC,
    FRAMES_TOPIC_PATTERN,
    VERDICTS_TOPIC_PREFIX,
)

_DEAD_LETTER_OVERHEAD = 64 * 1024


class WorkerSettings(KafkaSettings, PlaneSettings):
    """Configuration of one inference worker process (and the plane blocks it mixes in)."""

    # --- data plane: Kafka (how to reach it: KafkaSettings) ----------------------
    topic_retention_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=-1,
        description="retention.ms of the topics kenpin creates (a line's frames, verdicts, "
        "dead letters): how long records stay for a replay; -1 keeps them for ever. "
        "Frames are large: size the disk as frames/s x frame size x retention.",
    )
    topic_max_message_bytes: int = Field(
        default=9 * 1024 * 1024,
        ge=1024,
        description="max.message.bytes of the topics kenpin creates: at least "
        "kafka_max_message_bytes plus the record batch's overhead.",
    )
    frames_topic_pattern: str = Field(
        default=FRAMES_TOPIC_PATTERN,
        description="Regex of frame topics; new line topics are picked up without restart.",
    )
    verdicts_topic_prefix: str = VERDICTS_TOPIC_PREFIX
    deadletter_topic: str = DEADLETTER_TOPIC
    consumer_group: str = CONSUMER_GROUP
    topic_replication: int = Field(
        default=1,
        ge=1,
        description="Replication factor of the verdict and dead-letter topics the worker "
        "creates when they are missing (it never lets a send create a topic).",
    )
    broker_outage_deadline_s: float = Field(
        default=300.0,
        gt=0,
        description="How long the worker keeps retrying verdicts and commits the broker "
        "refuses (consumption paused meanwhile) before it exits with a clear log line; "
        "what it had not committed is judged again by the next owner.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long to wait for pending verdicts and heatmaps before "
        "committing what is done and exiting.",
    )
    rebalance_stall_s: float = Field(
        default=120.0,
        ge=1.0,
        description="A group rebalance (partitions revoked, none assigned yet) that lasts "
        "longer than this restarts the Kafka consumer: a stuck join must not stop a line.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="How long a silent worker keeps its partitions before the group "
        "rebalances them to the others.",
    )
    metadata_max_age_ms: int = Field(
        default=5_000,
        ge=100,
        description="Metadata refresh period: bounds how late a new line's topic is noticed.",
    )
    deadletter_max_original_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=0,
        description="Original bytes kept in a dead letter (a longer frame keeps a prefix); "
        "base64 adds a third, and the dead letter must fit kafka_max_message_bytes.",
    )

    # --- control plane: Redis (where it is: PlaneSettings) ------------------------
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Name of this worker in heartbeats; unique per process.",
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(
        default=15.0, gt=0, description="A worker silent this long drops out of the heartbeats."
    )

    # --- hot swap ------------------------------------------------------------------
    hot_swap: bool = Field(default=True, description=f"Follow {CURRENT_KEY} while running.")
    release_check_interval_s: float = Field(
        default=30.0,
        gt=0,
        description=f"Period of reading {CURRENT_KEY}, in case an announcement was missed.",
    )
    release_retry_s: float = Field(
        default=300.0,
        ge=0,
        description="Wait before retrying a release that failed to download (a broken "
        "artifact is never retried).",
    )
    releases_dir: Path = Field(
        default=Path("models/releases"), description="Where downloaded releases are kept."
    )

    # --- normal samples for retraining ---------------------------------------------
    normals_rate: float = Field(
        default=0.01, ge=0, le=1, description="Fraction of OK frames stored as normal samples."
    )
    normals_rates: dict[str, float] = Field(
        default_factory=dict,
        description='Per-product rates overriding normals_rate, JSON: {"bottle": 0.05}.',
    )
    normals_daily_cap: int = Field(
        default=500, ge=0, description="Most samples one worker stores per product and UTC day."
    )
    normals_margin: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="OK frames scoring above (1 - margin) x threshold are not sampled: "
        "a near miss may be a defect and must not teach the model it is normal.",
    )
    live_scores_flush_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the judged scores counted for the line's threshold evidence are "
        "added to Redis.",
    )
    evidence_ttl_s: float = Field(
        default=30 * 86400,
        gt=0,
        description="The score counts are kept this long after their last addition "
        "(plant-wide, as the console's findings).",
    )

    # --- blobs: S3 (where it is: PlaneSettings) -----------------------------------
    heatmap_backlog_max: int = Field(
        default=2000,
        ge=1,
        description="Most NG heatmaps waiting for S3 (an outage): beyond it the worker pauses "
        "consumption, never drops a heatmap; verdicts keep flowing until then.",
    )
    heatmap_backlog_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most memory the waiting heatmaps (frame, map, original bytes) may hold.",
    )
    s3_retry_max_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait between two attempts to store a heatmap while S3 fails "
        "(exponential backoff from 0.5 s).",
    )

    # --- model -------------------------------------------------------------------
    model_path: Path = Field(
        default=Path("models/current"),
        description=f"Local artifact folder (weights + {MANIFEST_FILE}); also where a "
        "release downloaded from S3 is kept.",
    )
    model_s3_key: str | None = Field(
        default=None, description="Object key prefix of an artifact to fetch at start."
    )
    runtime: RuntimeChoice = Field(
        default="auto",
        description="What runs the network: auto (the fastest where the worker runs: "
        "openvino on a CPU, torch on CUDA), torch, or the release's ONNX export through "
        "onnxruntime or openvino (served only once it judges as torch fp32 does; a release "
        "without an export is served by torch, with a warning). Precisions: "
        + ", ".join(f"{name} {'/'.join(spec.precisions)}" for name, spec in RUNTIMES.items())
        + " (onnxruntime fp16 with TensorRT).",
    )
    device: Device = Field(
        default="auto", description="Where the model runs; auto: CUDA when present, else the CPU."
    )
    precision: Precision = Field(
        default="fp32", description="Numeric precision of inference (autocast for bf16/fp16)."
    )

    # --- the loop ----------------------------------------------------------------
    max_batch: int = Field(default=16, ge=1, description="Most frames in one forward pass.")
    max_wait_ms: int = Field(
        default=50,
        ge=0,
        description="Longest a batch keeps growing while frames keep arriving; a frame with "
        "nothing queued behind it is judged at once.",
    )
    late_after_ms: float = Field(
        default=500.0,
        ge=0,
        description="A frame whose record is older than this has missed the line's deadline "
        "(set it to the bridge's KENPIN_BRIDGE_DEADLINE_MS): the PLC got TIMEOUT for it "
        "already. Such frames are still judged and their verdicts recorded, but after every "
        "frame still in time, so a backlog (a worker restart, a broker outage) costs only the "
        "parts captured while nothing could judge them. 0: strictly in arrival order.",
    )
    late_batch: int = Field(
        default=2,
        ge=1,
        description="Most late frames (see late_after_ms) in one forward pass: a frame in time "
        "arriving meanwhile waits for at most one such batch, so keep its time well inside "
        "the deadline.",
    )
    max_buffered_frames: int = Field(
        default=256,
        ge=1,
        description="Most frames polled and not yet judged (each held decoded in memory); "
        "past it, fetching pauses until the model catches up.",
    )
    decode_threads: int = Field(default=2, ge=1)
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        description="Largest width x height accepted, checked from the image header before "
        "decoding, so a decompression bomb cannot exhaust memory.",
    )

    # --- operations --------------------------------------------------------------
    metrics_port: int = Field(
        default=9108,
        ge=0,
        le=65535,
        description="/metrics, /livez and /readyz (/healthz: alias of /readyz); 0 turns them off.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the metrics and probe server binds. The endpoints have no "
        "authentication: loopback unless a deployment opts in (0.0.0.0 in a pod).",
    )
    livez_stall_s: float = Field(
        default=60.0,
        gt=0,
        description="/livez fails when the worker loop has not turned for this long: a loop "
        "stuck in a call shows, and the orchestrator restarts the process.",
    )
    livez_startup_grace_s: float = Field(
        default=600.0,
        gt=0,
        description="/livez passes this long after the process starts before the loop's first "
        "turn: downloading, verifying and warming a release up takes a while.",
    )

    @model_validator(mode="after")
    def _runtime_precision(self) -> Self:
        check_choice(self.runtime, self.precision)  # ValueError names what fits
        return self

    @model_validator(mode="after")
    def _dead_letters_fit(self) -> Self:
        # base64 (4/3) plus room for the JSON fields and the headers.
        needed = self.deadletter_max_original_bytes * 4 // 3 + _DEAD_LETTER_OVERHEAD
        if needed > self.kafka_max_message_bytes:
            raise ValueError(
                f"deadletter_max_original_bytes={self.deadletter_max_original_bytes} makes "
                f"dead letters of up to {needed} bytes, over "
                f"kafka_max_message_bytes={self.kafka_max_message_bytes}"
            )
        return self

    @model_validator(mode="after")
    def _topics_hold_the_largest_record(self) -> Self:
        if self.topic_max_message_bytes < self.kafka_max_message_bytes:
            raise ValueError(
                f"topic_max_message_bytes={self.topic_max_message_bytes} is below "
                f"kafka_max_message_bytes={self.kafka_max_message_bytes}: the largest frame "
                "would be refused by its own topic"
            )
        return self

    @field_validator("frames_topic_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value
