"""Defects drawn on held-out normals, and the hard-feature loss: what the checkpoint rule needs."""

import numpy as np
import torch

from trainer.learning.losses import LossWeights, channel_cosine_distance, distillation_loss
from trainer.learning.synthetic_anomalies import KINDS, make_anomalies


def _normals(n: int = 6, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(100, 140, (n, size, size, 3), dtype=np.uint8)
    return base


def test_every_normal_gets_one_defective_copy_of_each_kind_in_turn():
    normals = _normals()
    defective, kinds = make_anomalies(normals, seed=3)
    assert defective.shape == normals.shape and defective.dtype == np.uint8
    assert kinds == [KINDS[i % 3] for i in range(len(normals))]
    changed = (defective != normals).any(axis=(1, 2, 3))
    assert changed.all()  # no copy is left intact
    assert (normals == _normals()).all()  # the originals are not touched


def test_anomalies_are_deterministic_for_a_seed():
    normals = _normals()
    a, _ = make_anomalies(normals, seed=3)
    b, _ = make_anomalies(normals, seed=3)
    c, _ = make_anomalies(normals, seed=4)
    assert (a == b).all() and (a != c).any()


def test_hard_fraction_averages_only_the_largest_distances():
    t = torch.randn(2, 8, 4, 4)
    s = t.clone()
    s[0, :, 0, 0] = -t[0, :, 0, 0]  # one pixel of 32 is opposite: distance 2
    assert torch.isclose(channel_cosine_distance(t, s), torch.tensor(2 / 32))
    assert torch.isclose(channel_cosine_distance(t, s, hard_fraction=1 / 32), torch.tensor(2.0))


def test_hard_fraction_reaches_the_loss():
    t = [torch.randn(2, 8, 4, 4)]
    s = [torch.randn(2, 8, 4, 4)]
    plain, _ = distillation_loss(t, s, LossWeights(spatial_kd=0.0, hard_fraction=0.0))
    hard, _ = distillation_loss(t, s, LossWeights(spatial_kd=0.0, hard_fraction=0.1))
    assert hard > plain
