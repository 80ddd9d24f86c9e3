"""Hot swap on the REAL local stack: a release announced mid-stream, and bad releases refused.

(a) Two workers judge a camera streaming at a steady rate while a new release is
    announced: every frame gets exactly one verdict, each worker switches from the
    old version to the new one once and never back; the frame->verdict latency around
    the swap is printed beside the run's median.
(b) A release whose weights do not match its sha256, and one whose weights file is
    a pickle (torch.save), are refused; the old model keeps serving.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer

from model.release import read_manifest, sha256_file
from operations.releases import publish, upload
from planes.control import ControlPlane
from planes.storage import ObjectStore
from schemas.object_layout import MANIFEST_FILE
from tests.integration.frames import produce_frames
from tests.integration.releases import Camera, run_id, start_worker, wait_for
from tests.integration.test_worker_pipeline import collect_outcomes, create_topics, run_settings
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import train

PRODUCTS = ("washer", "tile")


@pytest.fixture(scope="module")
def swap_data(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("swapline"),
        products=PRODUCTS,
        size=64,
        train=10,
        test_good=4,
        test_per_defect=1,
        seed=11,
    )


@pytest.fixture(scope="module")
def trained(swap_data):
    return train(swap_data, TrainConfig(image_size=64, epochs=1, batch_size=8), progress=False)


def _export(trained, root: Path, version: str) -> Path:
    export(trained, root / version, version=version)
    return root / version


def _images(root: Path) -> list[tuple[Path, str]]:
    return [(p, prod) for prod in PRODUCTS for p in sorted((root / prod / "test").rglob("*.png"))]


def _settings(stack, artifact: Path, run: str, tmp_path: Path):
    return run_settings(
        stack,
        artifact,
        run,
        control_prefix=f"{run}:",
        releases_dir=tmp_path / "releases",
        release_check_interval_s=1.0,
        heartbeat_interval_s=0.5,
        max_batch=4,
        max_wait_ms=30,
    )


def test_release_swaps_mid_stream_without_losing_a_frame(local_stack, trained, swap_data, tmp_path):
    run = run_id("s")
    old = _export(trained, tmp_path, f"{run}-old")
    new = _export(trained, tmp_path, f"{run}-new")
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    create_topics(local_stack, [topic], partitions=2)
    settings = [_settings(local_stack, old, run, tmp_path / f"w{i}") for i in range(2)]
    settings = [s.model_copy(update={"worker_id": f"{run}-w{i}"}) for i, s in enumerate(settings)]
    store = ObjectStore.from_settings(settings[0])
    control = ControlPlane.from_url(settings[0].redis_url, settings[0].control_prefix)
    publish(store, control, old)

    workers = [start_worker(s, old) for s in settings]
    camera = Camera(
        local_stack.kafka_bootstrap, topic, line, _images(swap_data), fps=10, partitions=2
    )
    try:
        camera.start()
        # both workers in the group and judging: the steady state before the release
        wait_for(lambda: all(w.metrics.verdicts._metrics for w in workers), 60, "both judging")
        time.sleep(3.0)  # let the backlog of the group join drain
        announced_at = time.time()
        publish(store, control, new)
        wait_for(
            lambda: all(w.hot_swap.active_version == f"{run}-new" for w in workers),
            60,
            "both workers to swap",
        )
        swapped_at = time.time()
        time.sleep(3.0)
    finally:
        camera.stop()
    try:
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(camera.sent), timeout_s=60
        )
        beats = {b.worker_id: b for b in control.heartbeats()}
    finally:
        for w in workers:
            w.stop()

    # every frame exactly one verdict
    judged = [v.frame_id for v in verdicts]
    assert sorted(judged) == sorted(camera.sent), (len(judged), len(camera.sent))
    # each camera's partition is served by one worker: old ... old new ... new, once
    for partition in range(2):
        versions = [
            v.model_version
            for v in sorted(verdicts, key=lambda v: v.capture_time)
            if camera.sent[v.frame_id] == partition
        ]
        switches = sum(a != b for a, b in zip(versions, versions[1:], strict=False))
        assert versions[0] == f"{run}-old" and versions[-1] == f"{run}-new", partition
        assert switches == 1, (partition, versions)
    for w in workers:
        assert w.metrics.model_swaps._value.get() == 1
    assert {b.active_version for b in beats.values() if b.worker_id.startswith(run)} == {
        f"{run}-new"
    }

    # the median of the steady state: from the announcement to the end of the stream
    latencies = [v.latency_ms for v in verdicts if v.decision_time.timestamp() >= announced_at]
    median = statistics.median(latencies)
    during = [
        v.latency_ms
        for v in verdicts
        if announced_at - 0.5 <= v.decision_time.timestamp() <= swapped_at + 1.0
    ]
    print(
        f"\nhot swap: {len(verdicts)} frames at 10 fps on 2 workers, swap took "
        f"{swapped_at - announced_at:.2f}s after the announcement; latency median "
        f"{median:.0f} ms, during swap max {max(during):.0f} ms "
        f"({max(during) / median:.2f}x median, {len(during)} frames), p95 steady "
        f"{statistics.quantiles(latencies, n=20)[-1]:.0f} ms"
    )
    assert during, "no frame was judged during the swap"
    # The latency around the swap is printed, not asserted: on a loaded 2-core machine
    # the release's preparation thread competes with the serving thread, and a timing
    # bound would fail by chance. What holds by construction is asserted above: every
    # frame judged once, each partition switching old -> new exactly once.


def _bad_release(store: ObjectStore, good: Path, version: str, tmp_path: Path, kind: str):
    """Upload a release under `version` whose weights are tampered, or a pickle."""
    folder = tmp_path / version
    folder.mkdir()
    manifest = read_manifest(good).model_copy(update={"version": version})
    weights = folder / manifest.files[0].name
    if kind == "tampered":
        data = bytearray((good / manifest.files[0].name).read_bytes())
        data[-1] ^= 0xFF  # the manifest keeps the sha256 of the untampered file
        weights.write_bytes(bytes(data))
    else:  # a pickle payload, announced with its own (matching) sha256
        from safetensors.torch import load_file

        torch.save(load_file(str(good / manifest.files[0].name)), weights)
        file = manifest.files[0].model_copy(update={"sha256": sha256_file(weights)})
        manifest = manifest.model_copy(update={"files": [file]})
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json())
    return upload(store, folder)


def test_tampered_and_pickled_releases_are_refused(local_stack, trained, swap_data, tmp_path):
    run = run_id("r")
    old = _export(trained, tmp_path, f"{run}-old")
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    create_topics(local_stack, [topic], partitions=1)
    settings = _settings(local_stack, old, run, tmp_path / "w")
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    publish(store, control, old)
    running = start_worker(settings, old)
    try:
        for kind in ("tampered", "pickle"):
            manifest = _bad_release(store, old, f"{run}-{kind}", tmp_path, kind)
            control.set_current(manifest)
        refused = running.metrics.releases_refused
        wait_for(
            lambda: (
                refused.labels(reason="sha256_mismatch")._value.get() >= 1
                and refused.labels(reason="not_safetensors")._value.get() >= 1
            ),
            60,
            "both bad releases refused",
        )
        time.sleep(2.5)  # two periodic checks more: a refused version is not retried
        assert refused.labels(reason="sha256_mismatch")._value.get() == 1
        assert refused.labels(reason="not_safetensors")._value.get() == 1
        beat = next(b for b in control.heartbeats() if b.worker_id == settings.worker_id)
        assert beat.active_version == f"{run}-old"
        assert set(beat.refused_versions) == {f"{run}-tampered", f"{run}-pickle"}
        # the line keeps running on the old release
        producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
        sent = produce_frames(producer, topic, line, _images(swap_data)[:6], bad=False)
        producer.close()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(sent), timeout_s=60
        )
    finally:
        running.stop()
    assert {v.frame_id for v in verdicts} == {s.frame_id for s in sent}
    assert {v.model_version for v in verdicts} == {f"{run}-old"}
