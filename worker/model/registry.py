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
from typing import Generic, TypeVar

from torch import nn

from schemas.manifest import ModelManifest

Builder = Callable[[ModelManifest], nn.Module]
F = TypeVar("F", bound=Callable)

#: Modules whose import registers kenpin's own architectures.
BUILTIN_MODULES = ("worker.model.network",)


class Named(Generic[F]):
    """Functions by name, each registered once: the builders here, the trainer's learners."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._functions: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `function` serves `name`; a second, different one is an error."""

        def decorator(function: F) -> F:
            known = self._functions.get(name)
            if known is not None and known is not function:
                raise ValueError(f"{self.kind} {name!r} is already registered ({known!r})")
            self._functions[name] = function
            return function

        return decorator

    def unregister(self, name: str) -> None:
        self._functions.pop(name, None)

    def get(self, name: str) -> F | None:
        return self._functions.get(name)

    def names(self) -> list[str]:
        return sorted(self._functions)


_BUILDERS: Named[Builder] = Named("architecture")


class UnknownArchitecture(LookupError):
    """The manifest names an architecture no builder is registered for."""


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: `builder(manifest) -> nn.Module` builds the architecture `name`."""
    return _BUILDERS.register(name)


def unregister(name: str) -> None:
    """Forget architecture `name` (a test's own, once it is done)."""
    _BUILDERS.unregister(name)


def architectures() -> list[str]:
    """The names `build` knows, sorted."""
    _load_builtins()
    return _BUILDERS.names()


def build(manifest: ModelManifest) -> nn.Module:
    """The untrained network of `manifest.architecture`, as the manifest describes it.

    Raises UnknownArchitecture, or ValueError for a manifest the builder refuses.
    """
    _load_builtins()
    builder = _BUILDERS.get(manifest.architecture)
    if builder is None:
        raise UnknownArchitecture(
            f"architecture {manifest.architecture!r} is not one of {_BUILDERS.names()}"
        )
    return builder(manifest)


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers on first import, a no-op after
