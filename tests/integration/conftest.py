"""Fixtures for tests against the real local stack (Tansu, SeaweedFS, Redis).

One stack per test session: starting it takes a few seconds, and the tests
keep out of each other's way with unique topic names, group ids and keys.
A missing server binary skips these tests with the reason; nothing is ever
faked, so a test that runs has talked to a real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.binaries import MissingBinaryError, find_binaries
from deploy.local.stack import LocalStack, StackSettings
from tests.integration.pipeline import PRODUCTS
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import train

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory needs the stack, so mark it ``integration``.

    Lets ``pytest -m "not integration"`` leave them out without each module
    having to remember the marker.
    """
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    """A running stack for the session; ``.env`` holds its ``KENPIN_*`` values."""
    try:
        find_binaries()
    except MissingBinaryError as exc:
        pytest.skip(f"local stack binaries not installed: {exc}")
    with LocalStack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack.settings


@pytest.fixture
def kenpin_env(local_stack: StackSettings, monkeypatch: pytest.MonkeyPatch) -> StackSettings:
    """The stack's ``KENPIN_*`` variables set in ``os.environ`` for one test.

    For tests of code that reads its pydantic-settings from the environment.
    """
    for key, value in local_stack.env.items():
        monkeypatch.setenv(key, value)
    return local_stack


@pytest.fixture(scope="session")
def line_data(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("line"),
        products=PRODUCTS,
        size=64,
        train=12,
        test_good=3,
        test_per_defect=2,
        seed=5,
    )


@pytest.fixture(scope="session")
def artifact(tmp_path_factory, line_data) -> Path:
    result = train(line_data, TrainConfig(image_size=64, epochs=3, batch_size=8), progress=False)
    out = tmp_path_factory.mktemp("model")
    export(result, out, version="it-model-1")
    return out
