"""A second architecture trains, releases, hot-swaps and serves through kenpin's own path.

The toy (`TinyConv` of the worker's seam test: one convolution and a "memory
bank") is registered for serving and given a learner in a few lines; then the
production functions run unchanged: `learners.fit` (what `kenpin-trainer train`
and the retrain service call), `export`, `releases.upload`, the worker's
`start_model` and its `HotSwap`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import registry
from operations.releases import upload
from tests.worker.fakes import FakeControl, FakeStore
from tests.worker.test_model_seam import SIZE, TinyConv, frames, settings_for, toy_manifest
from trainer.learning.config import TrainConfig
from trainer.learning.data import discover, read_images
from trainer.learning.export import export
from trainer.learning.learners import fit
from trainer.learning.train import TrainResult
from worker.hot_swap import HotSwap
from worker.metrics import Health, WorkerMetrics
from worker.startup import start_model


def fit_tiny_conv(data_dir: Path, config: TrainConfig, progress: bool) -> TrainResult:
    """Training, toy-sized: the bank becomes the mean feature of the training normals."""
    products = discover(data_dir)
    network = TinyConv(toy_manifest("untrained"))

    def batch(paths: list[Path]) -> torch.Tensor:
        return torch.from_numpy(read_images(paths, config.image_size)).permute(0, 3, 1, 2)

    with torch.no_grad():
        normals = batch([p for product in products for p in product.normals])
        features = network.conv((normals.float() - network.mean) / network.std)
        network.bank.copy_(features.mean(dim=(0, 2, 3)))
        val_scores = {p.name: network(batch(p.normals)).scores.numpy() for p in products}
    return TrainResult(
        network=network.eval(),
        config=config,
        best_epoch=1,
        val_scores=val_scores,
        history=[{"epoch": 1}],
        seconds=0.0,
        data={"root": str(data_dir)},
        state=None,
        manifest_fields={"normalisation": toy_manifest("untrained").normalisation},
    )


@pytest.fixture
def tiny_conv():
    registry.register("tiny_conv", learner=fit_tiny_conv)(TinyConv)
    yield TrainConfig(architecture="tiny_conv", image_size=SIZE, epochs=1)
    registry.unregister("tiny_conv")


def test_a_toy_architecture_trains_releases_hot_swaps_and_serves(
    tiny_conv, synthetic_data, tmp_path
):
    store = FakeStore()
    trained = fit(synthetic_data, tiny_conv, progress=False)
    assert trained.network.bank.abs().sum() > 0  # it learned something from the normals
    first = upload(store, _export(trained, tmp_path / "t1", "t1"))
    assert first.architecture == "tiny_conv"
    assert set(first.products) == {p.name for p in discover(synthetic_data)}

    settings, metrics, health = settings_for(tmp_path), WorkerMetrics(), Health()
    control = FakeControl(current=first)
    start = start_model(settings, control, store, metrics=metrics, health=health)
    assert (start.model.version, start.refused) == ("t1", [])
    assert isinstance(start.model.network, TinyConv)
    batch = frames()
    np.testing.assert_allclose(
        start.model.judge(batch).scores, _scores(trained.network, batch), rtol=1e-5
    )

    retrained = fit(synthetic_data, tiny_conv, progress=False)
    second = upload(store, _export(retrained, tmp_path / "t2", "t2"))
    swap = HotSwap(settings, control, store, start.model.version, metrics=metrics, health=health)
    assert swap.consider(second) is not None
    served = swap.take_ready()
    assert served.version == "t2" and isinstance(served.network, TinyConv)
    np.testing.assert_allclose(
        served.judge(batch).scores, _scores(retrained.network, batch), rtol=1e-5
    )


def test_an_architecture_without_a_learner_is_refused_before_training(synthetic_data):
    with pytest.raises(LookupError, match="architecture 'nobody' is not one of"):
        fit(synthetic_data, TrainConfig(architecture="nobody"), progress=False)


def _export(result: TrainResult, folder: Path, version: str) -> Path:
    export(result, folder, version)
    return folder


def _scores(network: torch.nn.Module, batch: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)).scores.numpy()
