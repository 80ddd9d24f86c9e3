"""End-to-end retrain on real images, with real processes, timing every stage.

    python -m deploy.benchmarks.retrain_real --data ../shared/data/real

The line starts on a bootstrap release (trained for --bootstrap-epochs), served
by a `kenpin-worker run` process. Normals of every product are imported into the
normal store with `kenpin-trainer import-normals`, a `kenpin-trainer serve`
process takes a `kenpin-trainer retrain` request, trains (--epochs), gates the
candidate against the bootstrap release on held-out normals and the labelled
anomalies of --data, releases it, and the worker swaps to it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from deploy.demo import wait_until_ready
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from model.runtime import fastest_precision, resolve_device
from planes.settings import settings_env
from trainer.service.settings import TrainerSettings
from worker.settings import WorkerSettings


def cli(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="MVTec-layout dataset root")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--bootstrap-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/retrain-real"))
    args = parser.parse_args(argv)

    from operations.releases import publish
    from planes.control import ControlPlane
    from planes.storage import ObjectStore
    from trainer.learning.config import TrainConfig
    from trainer.learning.export import export
    from trainer.learning.train import train

    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    with LocalStack(out / "stack") as stack:
        s = stack.settings
        port = free_port()
        trainer_settings = dict(
            device="cpu",
            log_format="json",
            image_size=args.image_size,
            epochs=args.epochs,
            anomalies_dir=args.data.absolute(),
            progress=False,
            work_dir=out / "trainer",
        )
        worker_settings = dict(
            metrics_port=port, session_timeout_ms=6000, releases_dir=out / "releases"
        )
        env = {
            **os.environ,
            **s.env,
            **settings_env(trainer_settings, TrainerSettings),
            **settings_env(worker_settings, WorkerSettings),
        }

        t = time.perf_counter()
        config = TrainConfig(
            image_size=args.image_size,
            epochs=args.bootstrap_epochs,
            batch_size=16,
            bf16=fastest_precision(resolve_device("auto")) == "bf16",  # emulated: 10x slower
        )
        bootstrap = export(
            train(args.data, config, progress=False), out / "bootstrap", version="bootstrap"
        )
        store = ObjectStore.from_settings(_S3(s))
        control = ControlPlane.from_url(s.redis_url)
        publish(store, control, out / "bootstrap")
        times["bootstrap release (train + publish)"] = time.perf_counter() - t

        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env={**env, **settings_env({"model_path": out / "bootstrap"}, WorkerSettings)},
            stdout=(out / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        trainer = subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", "serve"],
            env=env,
            stdout=(out / "trainer.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(port, worker)
            t = time.perf_counter()
            for product in sorted(p.name for p in args.data.iterdir() if p.is_dir()):
                print(
                    cli(
                        env,
                        "import-normals",
                        "--product",
                        product,
                        str(args.data / product / "train" / "good"),
                    ),
                    flush=True,
                )
            times["import-normals"] = time.perf_counter() - t

            t = time.perf_counter()
            request = cli(env, "retrain", "--reason", "real-data end-to-end run").split()[-1]
            print(f"retrain request {request}", flush=True)
            status = json.loads(cli(env, "retrain-status", request, "--wait", "3600"))
            print(json.dumps(status, indent=1), flush=True)
            times["retrain request -> outcome"] = time.perf_counter() - t
            current = control.current()
            t = time.perf_counter()
            while time.perf_counter() - t < 120:
                if {beat.active_version for beat in control.heartbeats()} == {current.version}:
                    break
                time.sleep(0.5)
            swapped = next(
                json.loads(line)["timestamp"]
                for line in (out / "worker.log").read_text().splitlines()
                if '"model swapped"' in line
            )
            times["released -> worker swapped"] = (
                datetime.fromisoformat(swapped) - datetime.fromisoformat(status["updated"])
            ).total_seconds()
            print(cli(env, "release", "list"), flush=True)
            print(cli(env, "workers"), flush=True)
        finally:
            for proc in (trainer, worker):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
    print(f"bootstrap release {bootstrap.version}; new release {current.version}")
    for stage, seconds in times.items():
        print(f"  {stage}: {seconds:.1f} s")
    print("  trainer stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in status["stages"].items()))
    print(f"  outcome: {status['status']}: {status.get('detail')}")
    return 0


class _S3:
    """The stack's S3 settings in the shape ObjectStore reads."""

    def __init__(self, s) -> None:
        from pydantic import SecretStr

        self.s3_endpoint, self.s3_bucket, self.s3_secure = s.s3_endpoint, s.s3_bucket, False
        self.s3_access_key = SecretStr(s.s3_access_key)
        self.s3_secret_key = SecretStr(s.s3_secret_key)


if __name__ == "__main__":
    sys.exit(main())
