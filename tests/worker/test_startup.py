"""The model a worker starts with, with in-process fakes of S3 and Redis.

A refused current release must not stop a starting worker: it is refused as the
hot swap would (logged, counted), the newest release that verifies is served,
and nothing of the refused release is left in `releases_dir`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import worker.startup
from model.release import read_manifest, sha256_file
from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE
from tests.worker.fakes import FakeControl, FakeStore
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import train
from worker.hot_swap import HotSwap
from worker.metrics import Health, WorkerMetrics
from worker.settings import WorkerSettings
from worker.startup import MAX_FALLBACKS, NoModelToServe, start_model


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    data = generate(tmp_path_factory.mktemp("d"), ("washer",), size=64, train=6, test_good=1)
    result = train(data, TrainConfig(image_size=64, epochs=0, batch_size=8), progress=False)
    out = tmp_path_factory.mktemp("a") / "v1"
    export(result, out, version="v1")
    return out


def upload(store: FakeStore, good: Path, version: str, kind: str = "good") -> ModelManifest:
    """Put release `version` in the store: good, a pickle renamed, or tampered weights."""
    manifest = read_manifest(good).model_copy(update={"version": version})
    weights = (good / manifest.files[0].name).read_bytes()
    if kind == "pickle":  # torch.save under the safetensors name, with its own sha256
        pickled = good.parent / f"{version}.pickle"
        torch.save(load_file(str(good / manifest.files[0].name)), pickled)
        weights = pickled.read_bytes()
        file = manifest.files[0].model_copy(update={"sha256": sha256_file(pickled)})
        manifest = manifest.model_copy(update={"files": [file]})
    elif kind == "tampered":  # the manifest keeps the sha256 of the untampered file
        weights = weights[:-1] + bytes([weights[-1] ^ 0xFF])
    store.put(f"models/{version}/{manifest.files[0].name}", weights)
    store.put(f"models/{version}/{MANIFEST_FILE}", manifest.model_dump_json().encode())
    return manifest


def settings_for(tmp_path: Path, **overrides) -> WorkerSettings:
    values = dict(
        releases_dir=tmp_path / "releases",
        model_path=tmp_path / "no-local-model",
        device="cpu",
        max_batch=2,
        worker_id="w1",
    )
    values.update(overrides)
    return WorkerSettings(**values)


def refused(metrics: WorkerMetrics, reason: str) -> float:
    return metrics.releases_refused.labels(reason=reason)._value.get()


def on_disk(settings: WorkerSettings) -> list[str]:
    return sorted(p.name for p in settings.releases_dir.iterdir())


def test_the_current_release_is_served_and_recorded_as_last_good(tmp_path, artifact):
    store = FakeStore()
    current = upload(store, artifact, "v2")
    control = FakeControl(current=current)
    settings, health = settings_for(tmp_path), Health()
    start = start_model(settings, control, store, metrics=WorkerMetrics(), health=health)
    assert (start.model.version, start.source, start.refused) == ("v2", "current", [])
    assert control.last_good() == current
    assert health.snapshot()["model_version"] == "v2" and health.snapshot()["reason"] is None
    assert on_disk(settings) == ["v2"]  # the staging folder moved into place
    assert (settings.releases_dir / "v2" / MANIFEST_FILE).is_file()


class RecordingLog:
    """Stands in for the module's structlog logger: the events and their fields, by level."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def _record(self, level: str, event: str, **fields) -> None:
        self.events.append({"level": level, "event": event, **fields})

    def error(self, event: str, **fields) -> None:
        self._record("error", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self._record("warning", event, **fields)

    def info(self, event: str, **fields) -> None:
        self._record("info", event, **fields)


def test_a_pickled_current_release_falls_back_to_the_last_good_one(tmp_path, artifact, monkeypatch):
    store = FakeStore()
    good = upload(store, artifact, "v1")
    bad = upload(store, artifact, "v2", kind="pickle")
    control = FakeControl(current=bad, last_good=good, history=["v2", "v1"])
    settings, metrics, health = settings_for(tmp_path), WorkerMetrics(), Health()
    logs = RecordingLog()
    monkeypatch.setattr(worker.startup, "log", logs)
    start = start_model(settings, control, store, metrics=metrics, health=health)
    assert (start.model.version, start.source) == ("v1", "last good")
    assert [(r.version, r.reason) for r in start.refused] == [("v2", "not_safetensors")]
    assert start.refused[0].manifest == bad
    assert refused(metrics, "not_safetensors") == 1
    refusal = next(e for e in logs.events if e["event"] == "release refused")
    assert refusal["level"] == "error"
    assert (refusal["version"], refusal["reason"], refusal["at"]) == (
        "v2",
        "not_safetensors",
        "start",
    )
    snapshot = health.snapshot()
    assert snapshot["model_version"] == "v1"
    assert snapshot["refused"] == {"version": "v2", "reason": "not_safetensors"}
    assert (
        snapshot["reason"] == "serving last good v1: current release v2 refused (not_safetensors)"
    )
    # the pickle named model.safetensors is nowhere in releases_dir, staging included
    assert on_disk(settings) == ["v1"]


def test_without_a_last_good_record_the_history_is_tried_newest_first(tmp_path, artifact):
    store = FakeStore()
    upload(store, artifact, "v1")
    upload(store, artifact, "v2")
    bad = upload(store, artifact, "v4", kind="tampered")
    # v3 is in the history but its objects are gone from the bucket
    control = FakeControl(current=bad, history=["v4", "v3", "v2", "v1"])
    settings, metrics, health = settings_for(tmp_path), WorkerMetrics(), Health()
    start = start_model(settings, control, store, metrics=metrics, health=health)
    assert (start.model.version, start.source) == ("v2", "release history")
    assert [(r.version, r.reason) for r in start.refused] == [
        ("v4", "sha256_mismatch"),
        ("v3", "download_failed"),
    ]
    assert start.refused[1].manifest is None  # its manifest could not even be read
    assert refused(metrics, "sha256_mismatch") == 1 and refused(metrics, "download_failed") == 1
    assert "v2 from the release history" in health.snapshot()["reason"]
    assert control.last_good().version == "v2"  # what the next start tries first
    assert on_disk(settings) == ["v2"]


def test_a_bad_last_good_record_gives_way_to_the_history(tmp_path, artifact):
    store = FakeStore()
    upload(store, artifact, "v1")
    stale = upload(store, artifact, "v2", kind="tampered")
    bad = upload(store, artifact, "v3", kind="pickle")
    control = FakeControl(current=bad, last_good=stale, history=["v3", "v2", "v1"])
    settings = settings_for(tmp_path)
    start = start_model(settings, control, store, metrics=WorkerMetrics(), health=Health())
    assert start.model.version == "v1"  # v2 is tried once, as the last good record
    assert [r.version for r in start.refused] == ["v3", "v2"]
    assert on_disk(settings) == ["v1"]


def test_nothing_that_verifies_is_a_clean_error(tmp_path, artifact):
    store = FakeStore()
    bad = upload(store, artifact, "v2", kind="pickle")
    old = upload(store, artifact, "v1", kind="tampered")
    control = FakeControl(current=bad, last_good=old, history=["v2", "v1"])
    settings, metrics = settings_for(tmp_path), WorkerMetrics()
    with pytest.raises(NoModelToServe) as caught:
        start_model(settings, control, store, metrics=metrics, health=Health())
    assert "current release v2 refused (not_safetensors" in str(caught.value)
    assert "1 tried" in str(caught.value)
    assert refused(metrics, "not_safetensors") == 1 and refused(metrics, "sha256_mismatch") == 1
    assert on_disk(settings) == []  # neither refused release left anything behind
    assert control.last_good() == old  # a failed start records nothing


def test_fallbacks_are_bounded(tmp_path, artifact):
    store = FakeStore()
    bad = upload(store, artifact, "v99", kind="pickle")
    history = ["v99", *(f"gone{i}" for i in range(MAX_FALLBACKS + 3))]
    control = FakeControl(current=bad, history=history)
    metrics = WorkerMetrics()
    with pytest.raises(NoModelToServe):
        start_model(settings_for(tmp_path), control, store, metrics=metrics, health=Health())
    assert refused(metrics, "download_failed") == MAX_FALLBACKS


def test_no_current_release_and_no_local_model_is_a_clean_error(tmp_path):
    with pytest.raises(NoModelToServe, match="no current release"):
        start_model(
            settings_for(tmp_path),
            FakeControl(),
            FakeStore(),
            metrics=WorkerMetrics(),
            health=Health(),
        )


def test_a_broken_local_model_is_a_clean_error(tmp_path, artifact):
    local = tmp_path / "local"
    local.mkdir()
    (local / MANIFEST_FILE).write_text((artifact / MANIFEST_FILE).read_text())  # no weights
    with pytest.raises(NoModelToServe, match="cannot be served"):
        start_model(
            settings_for(tmp_path, model_path=local),
            FakeControl(),
            FakeStore(),
            metrics=WorkerMetrics(),
            health=Health(),
        )


def test_a_local_model_is_served_as_before(tmp_path, artifact):
    store = FakeStore()
    control = FakeControl(current=upload(store, artifact, "v2"))
    health = Health()
    start = start_model(
        settings_for(tmp_path, model_path=artifact),
        control,
        store,
        metrics=WorkerMetrics(),
        health=health,
    )
    assert (start.model.version, start.source) == ("v1", "local")  # the hot swap does the rest
    assert control.last_good() is None and health.snapshot()["model_version"] == "v1"


def test_the_hot_swap_does_not_retry_a_release_refused_at_start(tmp_path, artifact):
    store = FakeStore()
    good = upload(store, artifact, "v1")
    bad = upload(store, artifact, "v2", kind="pickle")
    control = FakeControl(current=bad, last_good=good)
    settings, metrics = settings_for(tmp_path), WorkerMetrics()
    start = start_model(settings, control, store, metrics=metrics, health=Health())
    swap = HotSwap(settings, control, store, start.model.version, metrics=metrics)
    for refusal in start.refused:
        swap.remember_refusal(refusal.manifest, refusal.reason)
    swap.tick()  # reads the current release: v2, refused already
    assert swap.consider(bad) is None
    assert refused(metrics, "not_safetensors") == 1  # counted once, at start
    assert swap.refused_versions == ["v2"]
    assert control.beats[-1].refused_versions == ["v2"]


def test_the_history_a_worker_reads_is_the_one_the_trainer_writes():
    """One name in `schemas.redis_keys`: the worker falls back on the list the trainer writes."""
    import operations.retrain_queue
    import planes.control

    assert planes.control.HISTORY_KEY == operations.retrain_queue.HISTORY_KEY
