"""A refused release on the REAL local stack: a new worker falls back; nothing bad stays on disk.

(3) `kenpin:model:current` names a release whose weights are a pickle renamed
    `model.safetensors`. A fresh worker process (`python -m worker.cli run`, no
    local model) refuses it as a running worker would (structured log,
    `kenpin_releases_refused_total{reason="not_safetensors"}`), falls back to the
    newest release that verifies (v1, from the release history the trainer
    pushed on publish), judges every frame with v1 without exiting, does not
    retry the refused release at every check, and says in /readyz which version
    it serves and why.
(4) A refused release leaves no folder, file or staging folder in
    `releases_dir`, whether refused at start or by the hot swap of a running
    worker; a release that verifies lands in `releases_dir/<version>`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer
from safetensors.torch import load_file

from model.release import read_manifest, sha256_file
from operations.releases import make_current, publish, upload
from planes.control import ControlPlane
from planes.settings import settings_env
from planes.storage import ObjectStore
from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE
from tests.integration.frames import produce_frames
from tests.integration.pipeline import collect_outcomes, create_topics, run_settings
from tests.integration.releases import run_id, start_worker, wait_for
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import train
from worker.settings import WorkerSettings

PRODUCTS = ("washer", "tile")
CHECK_INTERVAL_S = 1.0


@pytest.fixture(scope="module")
def fallback_data(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("fallbackline"),
        products=PRODUCTS,
        size=64,
        train=10,
        test_good=3,
        test_per_defect=1,
        seed=13,
    )


@pytest.fixture(scope="module")
def trained(fallback_data):
    return train(fallback_data, TrainConfig(image_size=64, epochs=1, batch_size=8), progress=False)


def _images(root: Path) -> list[tuple[Path, str]]:
    return [(p, prod) for prod in PRODUCTS for p in sorted((root / prod / "test").rglob("*.png"))]


def _bad_release(store: ObjectStore, good: Path, version: str, tmp_path: Path, kind: str):
    """Upload `version` with a pickle renamed `model.safetensors`, or with tampered weights."""
    folder = tmp_path / f"bad-{version}"
    folder.mkdir()
    manifest = read_manifest(good).model_copy(update={"version": version})
    weights = folder / manifest.files[0].name
    assert weights.name == "model.safetensors"
    if kind == "pickle":  # torch.save under the safetensors name, announced with its sha256
        torch.save(load_file(str(good / manifest.files[0].name)), weights)
        file = manifest.files[0].model_copy(update={"sha256": sha256_file(weights)})
        manifest = manifest.model_copy(update={"files": [file]})
    else:  # "tampered": the manifest keeps the sha256 of the untampered file
        data = bytearray((good / manifest.files[0].name).read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json())
    return upload(store, folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _refused_total(port: int, reason: str) -> float:
    _, text = _get(port, "/metrics")
    found = re.search(
        rf'^kenpin_releases_refused_total\{{reason="{reason}"\}} (\S+)$', text.decode(), re.M
    )
    return float(found.group(1)) if found else 0.0


def _on_disk(releases_dir: Path) -> list[str]:
    """Everything in releases_dir, hidden staging folders included."""
    return sorted(p.name for p in releases_dir.iterdir()) if releases_dir.exists() else []


def _worker_env(settings: WorkerSettings, stack) -> dict[str, str]:
    return {
        **os.environ,
        **settings_env(settings.model_copy(update={"log_format": "json"})),
    }


def test_a_new_worker_falls_back_when_the_current_release_is_refused(
    local_stack, trained, fallback_data, tmp_path
):
    run = run_id("f")
    v1, v2 = f"{run}-v1", f"{run}-v2"
    good = tmp_path / v1
    export(trained, good, version=v1)
    line = f"{run}-l1"
    topic = f"kenpin.frames.{line}"
    create_topics(local_stack, [topic], partitions=2)
    port = _free_port()
    releases_dir = tmp_path / "releases"
    settings = run_settings(
        local_stack,
        tmp_path / "no-local-model",  # no manifest there: the worker starts from a release
        run,
        control_prefix=f"{run}:",
        releases_dir=releases_dir,
        release_check_interval_s=CHECK_INTERVAL_S,
        heartbeat_interval_s=0.5,
        metrics_port=port,
        worker_id=f"{run}-w",
        max_batch=4,
        max_wait_ms=30,
    )
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    publish(store, control, good)  # v1: current, and in the history
    make_current(control, _bad_release(store, good, v2, tmp_path, "pickle"))
    assert control.current().version == v2 and control.history() == [v2, v1]
    assert control.last_good() is None  # no worker has served anything yet

    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env=_worker_env(settings, local_stack),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
    try:
        sent = produce_frames(producer, topic, line, _images(fallback_data), bad=False)
        producer.close()
        verdicts, letters = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{line}"], expected=len(sent), timeout_s=180
        )
        assert worker.poll() is None, log_path.read_text()[-3000:]

        def ready():
            code, body = _get(port, "/readyz")
            return json.loads(body) if code == 200 else None

        readyz = wait_for(ready, 60, "/readyz to answer 200")
        # a refused release is not retried at every check: let three checks pass first
        wait_for(
            lambda: json.loads(_get(port, "/livez")[1])["uptime_s"] >= 3 * CHECK_INTERVAL_S,
            30,
            "three release checks",
        )
        refused = _refused_total(port, "not_safetensors")
        livez_code, livez_body = _get(port, "/livez")
        livez = json.loads(livez_body)
        beat = wait_for(
            lambda: next(
                (b for b in control.heartbeats() if b.worker_id == settings.worker_id), None
            ),
            10,
            "the worker's heartbeat",
        )
        last_good = control.last_good()
        on_disk = _on_disk(releases_dir)
        assert worker.poll() is None, log_path.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    log_text = log_path.read_text()
    events = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]

    judged = {v.frame_id for v in verdicts}
    lost = {s.frame_id for s in sent} - judged
    print(
        f"\nrelease fallback: {len(sent)} frames sent, {len(verdicts)} verdicts, "
        f"{len(letters)} dead letters, lost={len(lost)}; served "
        f"{sorted({v.model_version for v in verdicts})}; refused_total{{not_safetensors}}="
        f"{refused:g} after {livez['uptime_s']:.1f}s up; releases_dir={on_disk}; "
        f"readyz={json.dumps(readyz)}"
    )
    # (3) it serves v1, every frame judged, and says why
    assert not lost and len(verdicts) == len(sent)
    assert {v.model_version for v in verdicts} == {v1}
    assert refused == 1  # counted once: not retried at every check interval
    assert readyz["ready"] is True and readyz["model_version"] == v1
    assert readyz["refused"] == {"version": v2, "reason": "not_safetensors"}
    assert readyz["reason"] == (
        f"serving {v1} from the release history: current release {v2} refused (not_safetensors)"
    )
    assert livez_code == 200 and livez["live"] is True
    refusals = [e for e in events if e.get("event") == "release refused"]
    assert [(e["version"], e["reason"], e["at"]) for e in refusals] == [
        (v2, "not_safetensors", "start")
    ]
    assert any(e.get("event") == "serving a fallback release" for e in events)
    assert "Traceback" not in log_text
    assert beat.active_version == v1 and beat.refused_versions == [v2]
    assert last_good is not None and last_good.version == v1  # for the next start
    # (4) nothing of the refused release on disk, staging included; v1 in place
    assert on_disk == [v1]
    assert worker.returncode == 0, log_text[-3000:]


def test_refused_releases_leave_nothing_in_releases_dir(
    local_stack, trained, fallback_data, tmp_path
):
    run = run_id("d")
    v1 = f"{run}-v1"
    good = tmp_path / v1
    export(trained, good, version=v1)
    releases_dir = tmp_path / "releases"
    settings = run_settings(
        local_stack,
        good,
        run,
        control_prefix=f"{run}:",
        releases_dir=releases_dir,
        release_check_interval_s=CHECK_INTERVAL_S,
        heartbeat_interval_s=0.5,
        worker_id=f"{run}-w",
        max_batch=4,
        max_wait_ms=30,
    )
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    publish(store, control, good)
    running = start_worker(settings, good)  # serves v1 from its local artifact
    try:
        for kind in ("pickle", "tampered"):
            control.set_current(_bad_release(store, good, f"{run}-{kind}", tmp_path, kind))
        refused = running.metrics.releases_refused
        wait_for(
            lambda: (
                refused.labels(reason="not_safetensors")._value.get() >= 1
                and refused.labels(reason="sha256_mismatch")._value.get() >= 1
            ),
            60,
            "both bad releases refused",
        )
        after_refusals = _on_disk(releases_dir)
        v3 = f"{run}-v3"
        export(trained, tmp_path / v3, version=v3)
        manifest: ModelManifest = publish(store, control, tmp_path / v3)
        wait_for(lambda: running.hot_swap.active_version == v3, 60, "the swap to v3")
        after_swap = _on_disk(releases_dir)
        landed = releases_dir / v3
        last_good = wait_for(control.last_good, 10, "the last good record")
    finally:
        running.stop()
    print(f"\nreleases_dir: after 2 refusals {after_refusals}, after a good release {after_swap}")
    assert after_refusals == []  # neither folder nor staging of the pickle or the tampered one
    assert after_swap == [v3]
    assert read_manifest(landed).files == manifest.files
    assert sha256_file(landed / manifest.files[0].name) == manifest.files[0].sha256
    assert last_good.version == v3
