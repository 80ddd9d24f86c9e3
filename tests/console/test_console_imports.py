"""The console's web process stays light: its pages load no client library and no torch.

kafka-python, redis and minio cost about 0.6 s of import (torch seconds and GBs):
the feed imports kafka-python when it starts, `console.plant_clients` the rest
when `console.cli` connects; `console.app` itself must not pull any of them in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "kafka", "minio", "redis")


def test_importing_the_app_loads_no_client_library_and_no_torch():
    probe = f"import sys, console.app; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"console.app loads {result.stdout.strip()}"


def test_the_real_planes_still_load_their_clients():
    """The split moved the clients, it did not lose them: `PlantPlanes` brings them along."""
    probe = (
        "import sys, console.plant_clients; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['minio', 'redis']"
