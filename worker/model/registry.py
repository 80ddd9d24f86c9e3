"""Architectures by name: what builds the inference network a manifest describes.

A release's manifest names its `architecture`; `build(manifest)` returns that
network, untrained, ready for the release's weights to be loaded into it
(`worker.model.release`). Whatever the architecture, the network takes a
(N, 3, S, S) batch of RGB pixels in [0, 255] and returns anomaly maps (N, S, S)
and image scores (N,), so the worker, the gate and the evaluation serve it
unchanged.

A new architecture is one decorated builder:

    @register("patchcore")
    def build_patchcore(manifest: ModelManifest) -> nn.Module:
        return PatchCore(manifest.backbone, manifest.image_size)

A builder raises ValueError when the manifest does not describe a network it
can build (a missing backbone, a normalisation that disagrees with it): the
release is refused as an invalid manifest. The built-in architectures
(`BUILTIN_MODULES`) register themselves on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from schemas.manifest import ModelManifest

Builder = Callable[[ModelManifest], nn.Module]
B = TypeVar("B", bound=Builder)

#: Modules whose import registers kenpin's own architectures.
BUILTIN_MODULES = ("worker.model.network",)

_BUILDERS: dict[str, Builder] = {}


class UnknownArchitecture(LookupError):
    """The manifest names an architecture no builder is registered for."""


def register(name: str) -> Callable[[B], B]:
    """Decorator: `builder(manifest) -> nn.Module` builds the architecture `name`."""

    def decorator(builder: B) -> B:
        known = _BUILDERS.get(name)
        if known is not None and known is not builder:
            raise ValueError(f"architecture {name!r} is already registered ({known!r})")
        _BUILDERS[name] = builder
        return builder

    return decorator


def unregister(name: str) -> None:
    """Forget architecture `name` (a test's own, once it is done)."""
    _BUILDERS.pop(name, None)


def architectures() -> list[str]:
    """The names `build` knows, sorted."""
    _load_builtins()
    return sorted(_BUILDERS)


def build(manifest: ModelManifest) -> nn.Module:
    """The untrained network of `manifest.architecture`, as the manifest describes it.

    Raises UnknownArchitecture, or ValueError for a manifest the builder refuses.
    """
    _load_builtins()
    builder = _BUILDERS.get(manifest.architecture)
    if builder is None:
        raise UnknownArchitecture(
            f"architecture {manifest.architecture!r} is not one of {sorted(_BUILDERS)}"
        )
    return builder(manifest)


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers on first import, a no-op after
