"""HotSwap with in-process fakes: a good release becomes ready once, bad ones are refused once."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.export import export
from trainer.synthetic import generate
from trainer.train import TrainConfig, train
from worker.hot_swap import HotSwap
from worker.model.artifact import MANIFEST_FILE, read_manifest
from worker.settings import WorkerSettings


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str = "", metadata=None) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        return self.objects[key]


class FakeControl:
    def __init__(self) -> None:
        self.beats = []

    def heartbeat(self, beat, ttl_s) -> None:
        self.beats.append(beat)

    def current(self):
        return None


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    data = generate(tmp_path_factory.mktemp("d"), ("washer",), size=64, train=6, test_good=1)
    result = train(data, TrainConfig(image_size=64, epochs=0, batch_size=8), progress=False)
    out = tmp_path_factory.mktemp("a") / "v1"
    export(result, out, version="v1")
    return out


def _upload(store: FakeStore, folder: Path, version: str, corrupt: bool = False):
    manifest = read_manifest(folder).model_copy(update={"version": version})
    weights = (folder / manifest.weights_file).read_bytes()
    if corrupt:
        weights = weights[:-1] + bytes([weights[-1] ^ 0xFF])
    store.put(f"models/{version}/{manifest.weights_file}", weights)
    store.put(f"models/{version}/{MANIFEST_FILE}", manifest.model_dump_json().encode())
    return manifest


def _swap(tmp_path: Path, store: FakeStore, control: FakeControl) -> HotSwap:
    settings = WorkerSettings(releases_dir=tmp_path, device="cpu", max_batch=2, worker_id="w1")
    return HotSwap(settings, control, store, active_version="v1")


def test_a_good_release_is_ready_once(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "v2")
    assert swap.consider(manifest) is not None
    assert swap.consider(manifest) is None  # already ready
    model = swap.take_ready()
    assert model is not None and model.version == "v2"
    assert swap.take_ready() is None
    swap.swapped(model)
    assert swap.active_version == "v2"
    assert control.beats[-1].active_version == "v2"
    assert swap.metrics.model_swaps._value.get() == 1


def test_a_corrupt_release_is_refused_once_and_not_retried(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "bad", corrupt=True)
    manifest = manifest.model_copy(update={"sha256": read_manifest(artifact).sha256})
    assert swap.consider(manifest) is None
    assert swap.consider(manifest) is None
    assert swap.metrics.releases_refused.labels(reason="sha256_mismatch")._value.get() == 1
    assert swap.take_ready() is None and swap.active_version == "v1"
    assert control.beats[-1].refused_versions == ["bad"]


def test_an_announcement_unlike_the_stored_manifest_is_refused(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "v3").model_copy(update={"sha256": "0" * 64})
    assert swap.consider(manifest) is None
    assert swap.metrics.releases_refused.labels(reason="manifest_mismatch")._value.get() == 1


def test_a_missing_release_is_retried_only_after_the_wait(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    clock = [0.0]
    swap.clock = lambda: clock[0]
    manifest = read_manifest(artifact).model_copy(update={"version": "v4"})
    assert swap.consider(manifest) is None  # nothing uploaded yet
    _upload(store, artifact, "v4")
    assert swap.consider(manifest) is None  # within release_retry_s
    clock[0] = swap.settings.release_retry_s + 1
    assert swap.consider(manifest) is not None
