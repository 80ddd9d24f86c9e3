"""The model seam: any registered architecture is released, verified and served by one path.

(a) A toy second architecture, registered here in a few lines, is written as a
    release of two files (weights and a "memory bank"), uploaded as the trainer
    uploads releases, and loaded by a starting worker, by the hot swap and by
    the trainer's loader, all through `model.release`.
(b) A release written before manifests named an architecture and listed files
    (`tests/worker/data/release_v1_manifest.json`, captured from that code)
    still loads, from a folder, from the bucket at start, and by the hot swap.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model import loading, registry
from model.artifact import write_manifest
from model.judgement import Judgement
from model.loading import fetch_model, load_network
from model.network import StudentTeacher
from model.release import RefusalReason, ReleaseRefused, sha256_file
from operations.releases import upload
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold, ReleaseFile
from schemas.object_layout import MANIFEST_FILE, release_key, release_prefix
from tests.worker.fakes import FakeControl, FakeStore
from worker.hot_swap import HotSwap
from worker.metrics import Health, WorkerMetrics
from worker.settings import WorkerSettings
from worker.startup import start_model

SIZE = 32
V1_MANIFEST = Path(__file__).with_name("data") / "release_v1_manifest.json"


class TinyConv(nn.Module):
    """The toy architecture: one convolution gives the map, compared with a learned bank."""

    def __init__(self, manifest: ModelManifest) -> None:
        super().__init__()
        norm = manifest.normalisation or Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3)
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1) * 255, False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1) * 255, False)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("bank", torch.zeros(4))  # a "memory bank": its own file

    def forward(self, images: torch.Tensor) -> Judgement[torch.Tensor]:
        x = (images.float() - self.mean) / self.std
        maps = (self.conv(x) - self.bank.view(1, -1, 1, 1)).square().mean(1)
        return Judgement(scores=maps.flatten(1).amax(1), maps=maps)


@pytest.fixture
def toy():
    registry.register("tiny_conv", learner="tests.trainer.test_architecture_seam:fit_tiny_conv")(
        TinyConv
    )
    yield "tiny_conv"
    registry.unregister("tiny_conv")


def toy_manifest(version: str, **overrides) -> ModelManifest:
    values = dict(
        version=version,
        created=datetime.now(UTC),
        architecture="tiny_conv",
        image_size=SIZE,
        normalisation=Normalisation(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)),
        files=[ReleaseFile(name="unwritten", sha256="0" * 64)],
        products={"part": ProductThreshold(threshold=1.0, rule="toy", normal_scores=1)},
    )
    return ModelManifest(**(values | overrides))


def write_toy_release(folder: Path, version: str) -> tuple[ModelManifest, TinyConv]:
    """The toy network as an artifact of two safetensors files, listed in its manifest."""
    manifest = toy_manifest(version)
    torch.manual_seed(7)
    network = TinyConv(manifest).eval()
    with torch.no_grad():
        network.bank.uniform_(-1, 1)
    folder.mkdir(parents=True)
    state = network.state_dict()
    conv = {k: v for k, v in state.items() if k.startswith("conv.")}
    save_file(conv, str(folder / "conv.safetensors"))
    save_file({"bank": state["bank"]}, str(folder / "bank.safetensors"))
    files = [
        ReleaseFile(name=name, sha256=sha256_file(folder / name))
        for name in ("conv.safetensors", "bank.safetensors")
    ]
    manifest = manifest.model_copy(update={"files": files})
    write_manifest(folder, manifest)
    return manifest, network


def settings_for(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        releases_dir=tmp_path / "releases",
        model_path=tmp_path / "no-local-model",
        device="cpu",
        max_batch=2,
        worker_id="w1",
    )


def frames(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


def reference_scores(network: nn.Module, batch: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        scores = network(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)).scores
    return scores.numpy()


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The folders `model.loading.load_network` loaded: the one path, counted."""
    seen: list[str] = []
    real = loading.load_network

    def counting(path, manifest=None):
        seen.append(Path(path).name)
        return real(path, manifest)

    monkeypatch.setattr(loading, "load_network", counting)
    return seen


# --- (a) a second architecture -----------------------------------------------------------


def test_a_toy_architecture_is_released_verified_and_served_by_start_and_hot_swap(
    toy, tmp_path, loads
):
    store = FakeStore()
    v1, network = write_toy_release(tmp_path / "art" / "t1", "t1")
    published = upload(store, tmp_path / "art" / "t1")  # the trainer's upload: files, manifest
    assert published == v1
    assert sorted(store.objects) == sorted(
        [release_key("t1", MANIFEST_FILE), release_key("t1", "conv.safetensors")]
        + [release_key("t1", "bank.safetensors")]
    )
    settings, metrics, health = settings_for(tmp_path), WorkerMetrics(), Health()
    control = FakeControl(current=published)

    start = start_model(settings, control, store, metrics=metrics, health=health)
    assert (start.model.version, start.source, start.refused) == ("t1", "current", [])
    assert isinstance(start.model.network, TinyConv)
    # the manifest's normalisation is what the network applies
    torch.testing.assert_close(
        start.model.network.mean.flatten().cpu(), torch.tensor([0.4, 0.5, 0.6]) * 255
    )
    batch = frames()
    np.testing.assert_allclose(
        start.model.judge(batch).scores, reference_scores(network, batch), rtol=1e-5
    )

    v2, network2 = write_toy_release(tmp_path / "art" / "t2", "t2")
    upload(store, tmp_path / "art" / "t2")
    swap = HotSwap(settings, control, store, start.model.version, metrics=metrics, health=health)
    assert swap.consider(v2) is not None
    swapped = swap.take_ready()
    assert swapped.version == "t2" and isinstance(swapped.network, TinyConv)
    np.testing.assert_allclose(
        swapped.judge(batch).scores, reference_scores(network2, batch), rtol=1e-5
    )
    assert sorted(p.name for p in settings.releases_dir.iterdir()) == ["t1", "t2"]
    assert sorted(p.name for p in (settings.releases_dir / "t2").iterdir()) == sorted(
        [MANIFEST_FILE, "bank.safetensors", "conv.safetensors"]
    )

    # the trainer measures the current release through the same loader
    current = fetch_model(store, release_prefix("t2"), tmp_path / "trainer", expected=v2)
    assert current.version == "t2"
    # start, hot swap and trainer: each loaded its release through load_network
    staged = [f".{version}.{os.getpid()}.part" for version in ("t1", "t2")]
    assert loads == [*staged, "trainer"]


def test_every_file_of_a_release_is_verified(toy, tmp_path):
    store = FakeStore()
    manifest, _ = write_toy_release(tmp_path / "art" / "t1", "t1")
    bank = tmp_path / "art" / "t1" / "bank.safetensors"
    data = bytearray(bank.read_bytes())
    data[-1] ^= 0xFF  # the second file, not the weights, is altered
    bank.write_bytes(bytes(data))
    upload(store, tmp_path / "art" / "t1")
    metrics = WorkerMetrics()
    swap = HotSwap(settings_for(tmp_path), FakeControl(), store, "t0", metrics=metrics)
    assert swap.consider(manifest) is None
    assert metrics.releases_refused.labels(reason="sha256_mismatch")._value.get() == 1
    with pytest.raises(ReleaseRefused) as refused:
        load_network(tmp_path / "art" / "t1")
    assert refused.value.reason is RefusalReason.SHA256_MISMATCH
    assert "bank.safetensors" in refused.value.detail


def test_an_architecture_the_worker_does_not_have_is_refused(tmp_path):
    """No `toy` fixture: this worker has never heard of tiny_conv."""
    assert "tiny_conv" not in registry.architectures()
    store = FakeStore()
    manifest, _ = write_toy_release(tmp_path / "art" / "t1", "t1")
    upload(store, tmp_path / "art" / "t1")
    metrics = WorkerMetrics()
    swap = HotSwap(settings_for(tmp_path), FakeControl(), store, "t0", metrics=metrics)
    assert swap.consider(manifest) is None
    assert metrics.releases_refused.labels(reason="unknown_architecture")._value.get() == 1
    assert swap.consider(manifest) is None  # final: not tried again
    assert metrics.releases_refused.labels(reason="unknown_architecture")._value.get() == 1


def test_registering_two_builders_under_one_name_is_an_error(toy):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("tiny_conv", learner="unused:fit")(lambda manifest: nn.Identity())
    assert "student_teacher" in registry.architectures()


# --- the manifest's normalisation ----------------------------------------------------------


def student_teacher_release(folder: Path, **overrides) -> ModelManifest:
    torch.manual_seed(0)
    network = StudentTeacher("efficientnet_lite0")
    folder.mkdir(parents=True)
    weights = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    values = dict(
        version="st1",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=SIZE,
        files=[ReleaseFile(name=weights.name, sha256=sha256_file(weights))],
        products={"part": ProductThreshold(threshold=1.0, rule="x", normal_scores=1)},
    )
    manifest = ModelManifest(**(values | overrides))
    write_manifest(folder, manifest)
    return manifest


def test_a_normalisation_unlike_the_backbone_is_refused(tmp_path):
    student_teacher_release(
        tmp_path / "st", normalisation=Normalisation(mean=(0.485, 0.456, 0.406), std=(0.5,) * 3)
    )
    with pytest.raises(ReleaseRefused) as refused:
        load_network(tmp_path / "st")
    assert refused.value.reason is RefusalReason.INVALID_MANIFEST
    assert "normalisation" in refused.value.detail


def test_the_normalisation_of_the_manifest_is_the_networks(tmp_path):
    student_teacher_release(
        tmp_path / "st", normalisation=Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3)
    )
    network, manifest = load_network(tmp_path / "st")
    assert manifest.architecture == "student_teacher"
    torch.testing.assert_close(network.mean.flatten(), torch.full((3,), 0.5 * 255))
    torch.testing.assert_close(network.std.flatten(), torch.full((3,), 0.5 * 255))


# --- (b) a release written before architectures and files ------------------------------------


@pytest.fixture(scope="module")
def v1_release(tmp_path_factory) -> tuple[Path, dict]:
    """An artifact folder as the old code wrote it: model.safetensors + a version 1 manifest.

    The manifest is the captured one, byte for byte, but for its `sha256`: the
    captured weights are not kept here, so untrained weights of the same network
    take their place, with their digest.
    """
    folder = tmp_path_factory.mktemp("v1") / "v1"
    folder.mkdir()
    raw = json.loads(V1_MANIFEST.read_text())
    assert {"weights_file", "sha256"} <= raw.keys() and "files" not in raw
    assert "architecture" not in raw
    torch.manual_seed(0)
    network = StudentTeacher(raw["backbone"])
    weights = folder / raw["weights_file"]
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    raw["sha256"] = sha256_file(weights)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
    return folder, raw


def test_a_version_1_manifest_reads_as_a_student_teacher_release_of_one_file(v1_release):
    _, raw = v1_release
    manifest = ModelManifest.model_validate(raw)
    assert manifest.architecture == "student_teacher"
    assert manifest.files == [ReleaseFile(name="model.safetensors", sha256=raw["sha256"])]
    assert manifest.normalisation == Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3)
    again = json.loads(manifest.model_dump_json())  # written back as version 2
    assert "sha256" not in again and "weights_file" not in again
    assert again["schema_version"] == 2
    assert ModelManifest.model_validate(again) == manifest


def test_a_version_1_release_still_loads_from_a_folder(v1_release):
    folder, raw = v1_release
    network, manifest = load_network(folder)
    assert isinstance(network, StudentTeacher) and manifest.version == raw["version"]
    assert manifest.scoring.scales == (0, 1, 2)


def test_a_version_1_release_in_the_bucket_is_served_at_start_and_by_the_hot_swap(
    v1_release, tmp_path
):
    folder, raw = v1_release
    store = FakeStore()
    for name in (MANIFEST_FILE, raw["weights_file"]):  # as the old trainer uploaded it
        store.put(release_key(raw["version"], name), (folder / name).read_bytes())
    # the current release as Redis holds it: the old JSON
    current = ModelManifest.model_validate_json(json.dumps(raw))
    settings, metrics = settings_for(tmp_path), WorkerMetrics()
    start = start_model(
        settings, FakeControl(current=current), store, metrics=metrics, health=Health()
    )
    assert (start.model.version, start.source, start.refused) == (raw["version"], "current", [])
    assert start.model.judge(frames(2)).scores.shape == (2,)

    swap = HotSwap(settings, FakeControl(), store, "v0", metrics=metrics)
    assert swap.consider(current) is not None
    assert swap.take_ready().version == raw["version"]
