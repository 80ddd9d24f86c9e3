"""The line and product labels of the verdict, dead-letter and latency metrics, end to end
through the worker loop (in-process fakes), and the error counters' names."""

from __future__ import annotations

from kafka.errors import KafkaTimeoutError
from prometheus_client import generate_latest

from schemas.frames import HEADER_NAMES
from tests.worker.test_worker_loop import (
    FakeConsumer,
    FakeProducer,
    frame,
    make_worker,
    model,  # noqa: F401 (a fixture)
    run_steps,
)
from worker.metrics import UNKNOWN_PRODUCT, WorkerMetrics, product_label


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def with_product(record, product: bytes | None):
    headers = [(k, v) for k, v in record.headers if k != HEADER_NAMES["product"]]
    if product is not None:
        headers.append((HEADER_NAMES["product"], product))
    return record._replace(headers=headers)


def test_verdicts_latency_and_dead_letters_carry_line_and_product(model):  # noqa: F811
    truncated = b"\x89PNG\r\n\x1a\nnot an image"
    consumer = FakeConsumer(
        [
            [
                frame(0),
                frame(1),
                frame(2, truncated),  # a product the model knows: counted under it
                with_product(frame(3), b"gizmo"),  # unknown to the model: "unknown"
                with_product(frame(4), None),  # no product header at all
            ]
        ]
    )
    worker = make_worker(model, consumer, FakeProducer(), max_batch=8)
    run_steps(worker, 2)
    m = worker.metrics
    assert sample(m, "kenpin_verdicts_total", line="l1", product="bottle", result="ng") == 2
    assert sample(m, "kenpin_frame_latency_seconds_count", line="l1", product="bottle") == 2
    assert (
        sample(m, "kenpin_deadletters_total", line="l1", product="bottle", reason="truncated_image")
        == 1
    )
    assert (
        sample(
            m,
            "kenpin_deadletters_total",
            line="l1",
            product=UNKNOWN_PRODUCT,
            reason="unknown_product",
        )
        == 1
    )
    assert (
        sample(
            m,
            "kenpin_deadletters_total",
            line="l1",
            product=UNKNOWN_PRODUCT,
            reason="missing_headers",
        )
        == 1
    )
    assert sample(m, "kenpin_inference_seconds_count") == 1  # one batch, one forward pass
    assert "gizmo" not in generate_latest(m.registry).decode()


def test_refused_commits_count_as_kafka_errors(model):  # noqa: F811
    consumer = FakeConsumer([[frame(0)]])
    consumer.refuse_commits = True
    worker = make_worker(model, consumer, FakeProducer())
    run_steps(worker, 2)
    assert sample(worker.metrics, "kenpin_kafka_errors_total", operation="commit") >= 1
    assert KafkaTimeoutError  # the fake's refusal: a Kafka error, as a broker away raises


def test_product_label_reads_raw_headers_and_never_invents_a_series():
    known = {"bottle"}.__contains__
    assert product_label([("kenpin-product", b"bottle")], known) == "bottle"
    assert product_label([("kenpin-product", b"made-up")], known) == UNKNOWN_PRODUCT
    assert product_label([("kenpin-product", b"\xff\xfe")], known) == UNKNOWN_PRODUCT
    assert product_label(None, known) == UNKNOWN_PRODUCT


def test_error_counters_and_inference_histogram_names():
    metrics = WorkerMetrics()
    metrics.s3_errors.labels(operation="put").inc()
    metrics.kafka_errors.labels(operation="verdict").inc()
    metrics.inference.observe(0.02)
    text = generate_latest(metrics.registry).decode()
    assert 'kenpin_s3_errors_total{operation="put"} 1.0' in text
    assert 'kenpin_kafka_errors_total{operation="verdict"} 1.0' in text
    assert "kenpin_inference_seconds_count 1.0" in text
