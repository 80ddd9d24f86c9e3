"""Fitting the memory head: the coreset, the weights, and a release made from a trained one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.loading import load_network
from trainer.learning.config import TrainConfig
from trainer.learning.data import discover, read_images, split_normals
from trainer.learning.export import export, export_with_memory
from trainer.learning.memory_fit import greedy_coreset, served_scores
from trainer.learning.train import train


def test_the_coreset_takes_one_row_of_each_far_apart_cluster_first():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0] * 16, [50.0] * 16, [-50.0] * 16])
    rows = torch.cat([c + 0.01 * torch.randn(40, 16) for c in centres])
    chosen = greedy_coreset(rows, 3, seed=0)
    assert sorted(int(i) // 40 for i in chosen) == [0, 1, 2]
    assert len(greedy_coreset(rows, 1000, seed=0)) == len(rows)  # never more than there are


@pytest.fixture(scope="module")
def trained(synthetic_data):
    return train(synthetic_data, TrainConfig(image_size=64, epochs=1, batch_size=8), progress=False)


def test_training_fits_a_head_and_calibrates_on_what_is_served(trained, synthetic_data):
    head = trained.network.memory_head
    assert head is not None and set(head.products) == {"tile", "washer"}
    assert all(0.1 <= share.weight <= 10.0 for share in head.products.values())
    # 8 training images of 64 px hold 8 x 16 stride-16 patches: all of them are kept
    assert all(share.rows == 8 * 16 for share in head.products.values())
    for product in discover(synthetic_data):
        _, val = split_normals(product.normals, 0.2, 0)
        np.testing.assert_allclose(
            trained.val_scores[product.name],
            served_scores(trained.network, read_images(val, 64)),
            rtol=1e-5,
        )


def test_a_head_is_fitted_onto_a_trained_release(tmp_path, trained, synthetic_data):
    plain = trained.network
    export(trained, tmp_path / "trained", version="t1")
    release = export_with_memory(
        tmp_path / "trained", synthetic_data, tmp_path / "memory", patches=5, progress=False
    )
    assert release.parent_version == "t1" and release.memory_head is not None
    assert {share.rows for share in release.memory_head.products.values()} == {5}
    network, _ = load_network(tmp_path / "memory")
    assert network.memory.shape == (10, 152) and plain.memory.shape == (256, 152)


def test_a_head_is_not_fitted_on_other_data(tmp_path, trained, synthetic_data):
    from trainer.learning.synthetic_dataset import generate

    export(trained, tmp_path / "trained", version="t1")
    other = generate(tmp_path / "other", products=("washer", "tile"), size=64, train=10, seed=9)
    with pytest.raises(ValueError, match="other normals"):
        export_with_memory(tmp_path / "trained", other, tmp_path / "memory", patches=5)
