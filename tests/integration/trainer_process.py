"""A trainer in a process of its own whose training never ends: the trainer a test kills.

`python -m tests.integration.trainer_process` serves retrain requests with the
`KENPIN_*` settings of its environment, like `kenpin-trainer serve`, except that
its training step marks `training_marker(trainer id)` in Redis and then blocks
until the process is killed. Killing it (SIGKILL) is a trainer dying mid-run:
nothing of it renews its claim on the request or its lock any more.
"""

from __future__ import annotations

import threading
from pathlib import Path

from planes.control import ControlPlane
from planes.logs import configure_logging
from trainer.learning.config import TrainConfig
from trainer.learning.train import TrainResult
from trainer.service.retrain import RetrainService
from trainer.service.settings import TrainerSettings


def training_marker(trainer_id: str) -> str:
    """The key (inside the control prefix) set when that trainer's training step began."""
    return f"test:training:{trainer_id}"


def main() -> None:
    settings = TrainerSettings()
    configure_logging("json")
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)

    def train_until_killed(data_dir: Path, config: TrainConfig, progress: bool) -> TrainResult:
        control.redis.set(control.key(training_marker(settings.trainer_id)), str(data_dir))
        threading.Event().wait()  # a training step longer than any claim time
        raise AssertionError("unreachable: the test kills this process")

    RetrainService(settings, control, train_fn=train_until_killed).serve()


if __name__ == "__main__":
    main()
