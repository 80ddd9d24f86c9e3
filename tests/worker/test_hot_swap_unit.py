"""HotSwap with in-process fakes: a good release becomes ready once, bad ones are refused once.

A refused release leaves nothing in `releases_dir`; a swapped one is recorded as last good.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.release import read_manifest, sha256_file
from schemas.object_layout import MANIFEST_FILE
from tests.worker.fakes import FakeStore
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import train
from worker.hot_swap import HotSwap
from worker.metrics import Health
from worker.settings import WorkerSettings


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
    weights = (folder / manifest.files[0].name).read_bytes()
    if corrupt:
        weights = weights[:-1] + bytes([weights[-1] ^ 0xFF])
    store.put(f"models/{version}/{manifest.files[0].name}", weights)
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


def test_a_release_taken_by_the_loop_is_not_prepared_again_before_swapped(tmp_path, artifact):
    """The loop takes the model, then records the swap: a check in between must not redo it."""
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "v2")
    assert swap.consider(manifest) is not None
    model = swap.take_ready()
    assert swap.consider(manifest) is None  # the periodic check, before `swapped`
    swap.swapped(model)
    assert swap.take_ready() is None
    assert swap.metrics.model_swaps._value.get() == 1


def test_a_corrupt_release_is_refused_once_and_not_retried(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "bad", corrupt=True)
    manifest = manifest.model_copy(update={"files": read_manifest(artifact).files})
    assert swap.consider(manifest) is None
    assert swap.consider(manifest) is None
    assert swap.metrics.releases_refused.labels(reason="sha256_mismatch")._value.get() == 1
    assert swap.take_ready() is None and swap.active_version == "v1"
    assert control.beats[-1].refused_versions == ["bad"]


def test_an_announcement_unlike_the_stored_manifest_is_refused(tmp_path, artifact):
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    manifest = _upload(store, artifact, "v3")
    manifest = manifest.model_copy(
        update={"files": [manifest.files[0].model_copy(update={"sha256": "0" * 64})]}
    )
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


def test_a_refused_release_leaves_nothing_in_releases_dir(tmp_path, tmp_path_factory, artifact):
    """Verified in staging, deleted on refusal: only releases that verified are on disk."""
    store, control = FakeStore(), FakeControl()
    swap = _swap(tmp_path, store, control)
    tampered = _upload(store, artifact, "bad", corrupt=True).model_copy(
        update={"files": read_manifest(artifact).files}
    )
    assert swap.consider(tampered) is None
    pickled = read_manifest(artifact).model_copy(update={"version": "pickled"})
    weights = tmp_path_factory.mktemp("pickle") / pickled.files[0].name
    torch.save(load_file(str(artifact / pickled.files[0].name)), weights)
    pickled = pickled.model_copy(
        update={"files": [pickled.files[0].model_copy(update={"sha256": sha256_file(weights)})]}
    )
    store.put(f"models/pickled/{pickled.files[0].name}", weights.read_bytes())
    store.put(f"models/pickled/{MANIFEST_FILE}", pickled.model_dump_json().encode())
    assert swap.consider(pickled) is None
    assert swap.metrics.releases_refused.labels(reason="not_safetensors")._value.get() == 1
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the staging is left
    assert swap.consider(_upload(store, artifact, "v2")) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v2"]
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == sorted(
        [MANIFEST_FILE, pickled.files[0].name]
    )


class RecordingControl(FakeControl):
    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.fail = fail
        self.last_good = None

    def set_last_good(self, manifest) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis down")
        self.last_good = manifest


def test_a_swapped_release_is_recorded_as_last_good_off_the_loop(tmp_path, artifact):
    store, control = FakeStore(), RecordingControl(fail=1)
    health = Health()
    swap = HotSwap(
        WorkerSettings(releases_dir=tmp_path, device="cpu", max_batch=2, worker_id="w1"),
        control,
        store,
        active_version="v1",
        health=health,
    )
    health.release_refused("bad", "sha256_mismatch")
    model = swap.consider(_upload(store, artifact, "v2"))
    swap.swapped(swap.take_ready())
    assert control.last_good is None  # the loop's thread does not wait on Redis
    assert health.snapshot()["model_version"] == "v2" and health.snapshot()["refused"] is None
    swap.tick()  # Redis down: kept for the next tick
    assert control.last_good is None
    swap.tick()
    assert control.last_good == model.manifest
