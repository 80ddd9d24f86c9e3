"""Training whatever architecture a recipe names, through the learner it registered.

The training side of the model seam: an architecture registers its builder and
its learner together (`model.registry.register`); `fit(data_dir, config)` runs
the learner of `config.architecture`, and whatever it returns goes through the
same export, gate, release and hot swap as kenpin's student–teacher. A learner
is `(data_dir, config, progress) -> TrainResult`; its network must be one that
the registered builder rebuilds from the manifest `export` writes, and it fills
`TrainResult.manifest_fields` with what that builder needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model import registry
from trainer.learning.config import TrainConfig
from trainer.learning.train import TrainResult


def fit(data_dir: Path, config: TrainConfig, progress: bool = True) -> TrainResult[Any, Any]:
    """Train `config.architecture` on the normals under `data_dir`."""
    learner = registry.architecture(config.architecture).load_learner()
    return learner(Path(data_dir), config, progress)
