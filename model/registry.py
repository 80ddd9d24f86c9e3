"""Architectures by name: what builds the network a manifest describes, and what trains it.

A release's manifest names its `architecture`; `build(manifest)` returns that
network, untrained, ready for the release's weights to be loaded into it
(`model.release`). Whatever the architecture, the network takes a
(N, 3, S, S) batch of RGB pixels in [0, 255] and returns a `Judgement` (image
scores (N,) and anomaly maps (N, S, S), `model.judgement`), so the worker, the
gate and the evaluation serve it unchanged.

A new architecture registers its builder and its learner in one place:

    @register("patchcore", learner="trainer.learning.patchcore:fit")
    def build_patchcore(manifest: ModelManifest) -> nn.Module:
        return PatchCore(manifest.backbone, manifest.image_size)

The learner, `(data_dir, config, progress) -> TrainResult`, is named by its
import path, so a worker that only serves never imports the trainer
(`trainer.learning.learners.fit` imports it when training); a test may hand the
function itself. A builder raises ValueError when the manifest does not
describe a network it can build (a missing backbone, a normalisation that
disagrees with it): the release is refused as an invalid manifest. The built-in
architectures (`BUILTIN_MODULES`) register themselves on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from schemas.manifest import ModelManifest

Builder = Callable[[ModelManifest], nn.Module]

#: Modules whose import registers kenpin's own architectures.
BUILTIN_MODULES = ("model.network",)


@dataclass(frozen=True)
class Architecture:
    """One architecture: how its network is built from a manifest, and what trains it."""

    name: str
    build: Builder
    #: `"module:function"` of its learner, or the function itself.
    learner: str | Callable[..., Any]

    def load_learner(self) -> Callable[..., Any]:
        """The learner function (its module imported now, when training needs it)."""
        if callable(self.learner):
            return self.learner
        module, _, function = self.learner.partition(":")
        return getattr(importlib.import_module(module), function)


_ARCHITECTURES: dict[str, Architecture] = {}


class UnknownArchitecture(LookupError):
    """The manifest or the recipe names an architecture nobody registered."""


def register(name: str, *, learner: str | Callable[..., Any]) -> Callable[[Builder], Builder]:
    """Decorator: `builder(manifest) -> nn.Module` builds `name`, and `learner` trains it.

    Registering a name twice with another builder is an error (two modules would
    claim one architecture).
    """

    def decorator(builder: Builder) -> Builder:
        known = _ARCHITECTURES.get(name)
        if known is not None and known.build is not builder:
            raise ValueError(f"architecture {name!r} is already registered ({known.build!r})")
        _ARCHITECTURES[name] = Architecture(name, builder, learner)
        return builder

    return decorator


def unregister(name: str) -> None:
    """Forget architecture `name` (a test's own, once it is done)."""
    _ARCHITECTURES.pop(name, None)


def architectures() -> list[str]:
    """The names `build` knows, sorted."""
    _load_builtins()
    return sorted(_ARCHITECTURES)


def architecture(name: str) -> Architecture:
    """The registered architecture `name`; UnknownArchitecture if there is none."""
    _load_builtins()
    found = _ARCHITECTURES.get(name)
    if found is None:
        raise UnknownArchitecture(f"architecture {name!r} is not one of {sorted(_ARCHITECTURES)}")
    return found


def build(manifest: ModelManifest) -> nn.Module:
    """The untrained network of `manifest.architecture`, as the manifest describes it.

    Raises UnknownArchitecture, or ValueError for a manifest the builder refuses.
    """
    return architecture(manifest.architecture).build(manifest)


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers on first import, a no-op after
