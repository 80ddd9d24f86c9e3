"""Learners by architecture: what trains the network that a release of it serves.

The training side of the model seam (`worker.model.registry` is the serving
side): `fit(data_dir, config)` runs the learner registered for
`config.architecture`, and whatever it returns goes through the same export,
gate, release and hot swap as kenpin's student–teacher. A learner is
`(data_dir, config, progress) -> TrainResult`; its network must be one that
`worker.model.registry.build` rebuilds from the manifest `export` writes, and it
fills `TrainResult.manifest_fields` with what that builder needs.

A new architecture is one decorated learner beside its registered builder:

    @register_learner("patchcore")
    def fit_patchcore(data_dir: Path, config: TrainConfig, progress: bool) -> TrainResult:
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.learning.config import TrainConfig
from trainer.learning.train import TrainResult, train
from worker.model.registry import Named

Learner = Callable[[Path, TrainConfig, bool], TrainResult]

_LEARNERS: Named[Learner] = Named("learner of")
_LEARNERS.register("student_teacher")(train)


class UnknownLearner(LookupError):
    """The config names an architecture no learner is registered for."""


def register_learner(name: str) -> Callable[[Learner], Learner]:
    """Decorator: `learner(data_dir, config, progress) -> TrainResult` trains `name`."""
    return _LEARNERS.register(name)


def unregister_learner(name: str) -> None:
    """Forget the learner of `name` (a test's own, once it is done)."""
    if name != "student_teacher":
        _LEARNERS.unregister(name)


def fit(data_dir: Path, config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train `config.architecture` on the normals under `data_dir`."""
    learner = _LEARNERS.get(config.architecture)
    if learner is None:
        raise UnknownLearner(
            f"no learner for architecture {config.architecture!r}; known: {_LEARNERS.names()}"
        )
    return learner(Path(data_dir), config, progress)
