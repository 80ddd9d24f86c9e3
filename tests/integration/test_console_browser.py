"""The operator console in a real headless Chromium, on the real local stack.

The console runs in this process (uvicorn on a free loopback port) with its real
Kafka feed, Redis and S3 clients; Chromium is driven through chromedriver. The
test plays the worker's part by writing what a worker writes (verdict records on
the line's verdict topic, the heatmap and the original beside it in S3, a
heartbeat in Redis), then does what an operator does: logs in, watches the
verdicts arrive, opens an NG heatmap, files a frame as normal, asks for a retrain
and follows its status.

`KENPIN_TEST_CONSOLE_SCREENSHOT=docs/images/console.png` saves the live page there,
`KENPIN_TEST_CALIBRATION_SCREENSHOT=docs/images/console_thresholds.png` the Thresholds page.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import uvicorn
from kafka import KafkaProducer

from console.app import create_app
from console.live import VerdictFeed, VerdictHub
from console.plant_clients import PlantPlanes
from console.settings import ConsoleSettings
from operations import releases
from operations.plant import Plant
from operations.retrain_queue import RetrainQueue
from operations.settings import OperationsSettings
from planes.control import ControlPlane
from planes.storage import ObjectStore
from schemas.common import utc_now
from schemas.control import RetrainOutcome, RetrainRequest, WorkerHeartbeat
from schemas.live_scores import PartFinding, bin_field, score_bin
from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE, frame_key, heatmap_key, normal_key, release_key
from schemas.topics import verdict_topic
from schemas.verdicts import Verdict
from tests.integration.pipeline import create_topics
from tests.integration.releases import run_id, wait_for
from worker.heatmaps import render_overlay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "a long operator password"
WAIT_S = 30
#: A release manifest as the trainer writes it (its files are not needed to list or activate it).
MANIFEST = Path(__file__).parents[1] / "worker" / "data" / "release_v1_manifest.json"


def _missing_browser() -> str | None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            return f"{binary} not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _part_picture(seed: int, scratch: bool) -> tuple[np.ndarray, np.ndarray]:
    """A washer on a conveyor (RGB) and an anomaly map that is hot where the scratch is."""
    rng = np.random.default_rng(seed)
    image = np.full((128, 128, 3), 70, np.uint8) + rng.integers(0, 12, (128, 128, 3), np.uint8)
    cv2.circle(image, (64, 64), 44, (185, 188, 192), -1)
    cv2.circle(image, (64, 64), 16, (70, 70, 70), -1)
    amap = np.zeros((32, 32), np.float32)
    if scratch:
        cv2.line(image, (40, 38), (60, 52), (40, 35, 30), 3)
        cv2.circle(amap, (12, 11), 4, 1.0, -1)
        amap = cv2.GaussianBlur(amap, (9, 9), 3)
    return image, amap


@dataclass
class Stack:
    """The test's own corner of the shared stack, and the console running on it."""

    url: str
    line: str
    plane: Plant
    queue: RetrainQueue
    bootstrap: str


@pytest.fixture
def console_stack(local_stack) -> Iterator[Stack]:
    run = run_id("c")
    plant_settings = OperationsSettings(
        redis_url=local_stack.redis_url,
        control_prefix=f"{run}:",  # no retrain request of ours reaches another test's trainer
        s3_endpoint=local_stack.s3_endpoint,
        s3_access_key=local_stack.s3_access_key,
        s3_secret_key=local_stack.s3_secret_key,
        s3_bucket=f"console-{run}",  # nor a normal filed here another test's snapshot
        s3_secure=False,
    )
    control = ControlPlane.from_settings(plant_settings)
    plane = Plant(
        control,
        ObjectStore.from_settings(plant_settings),
        RetrainQueue(control, plant_settings.outcome_ttl_s),
    )
    plane.store.ensure_bucket()
    line = f"{run}-l1"
    create_topics(local_stack, [verdict_topic(line), verdict_topic(f"{run}-l2")], partitions=1)

    port = _free_port()
    settings = ConsoleSettings(
        port=port,
        password=PASSWORD,
        kafka_bootstrap=local_stack.kafka_bootstrap,
        line_prefix=f"{run}-",
        topic_refresh_s=1.0,
    )
    hub = VerdictHub(settings.recent_per_line, settings.gallery_size)
    app = create_app(settings, PlantPlanes(plane), hub, VerdictFeed(settings, hub))
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, WAIT_S, "the console to start", every_s=0.1)
        wait_for(
            lambda: hub.feed.connected and hub.feed.topics == 2,
            WAIT_S,
            "the feed to find both lines",
            every_s=0.1,
        )
        yield Stack(
            f"http://127.0.0.1:{port}",
            line,
            plane,
            plane.queue,
            local_stack.kafka_bootstrap,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def browser() -> Iterator:
    if (reason := _missing_browser()) is not None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1500,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _verdicts(stack: Stack) -> list[tuple[Verdict, np.ndarray | None, np.ndarray | None]]:
    """A few parts on two lines, two of them NG; (verdict, frame, anomaly map) each."""
    made = []
    start = utc_now() - timedelta(seconds=3)
    other = stack.line.replace("-l1", "-l2")
    for k in range(7):
        ng = k in (2, 5)
        line = other if k == 4 else stack.line
        captured = start + timedelta(milliseconds=400 * k)
        frame_id = f"{line}-f{k}"
        image, amap = _part_picture(k, scratch=ng)
        verdict = Verdict(
            frame_id=frame_id,
            line=line,
            camera="cam-1",
            product="washer",
            result="ng" if ng else "ok",
            score=0.81 + 0.05 * k if ng else 0.12 + 0.01 * k,
            threshold=0.42,
            model_version="it-model-1",
            heatmap_key=heatmap_key(line, captured, frame_id) if ng else None,
            capture_time=captured,
            part_id=f"P-{4711 + k}",
            sequence=1000 + k,
            decision_time=captured + timedelta(milliseconds=38 + k),
            latency_ms=38.0 + k,
        )
        made.append((verdict, image if ng else None, amap if ng else None))
    return made


def _store_like_a_worker(store: ObjectStore, verdict: Verdict, image, amap) -> bytes:
    """The heatmap overlay and the original PNG beside it, as the worker stores them."""
    ok, original = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    store.put(verdict.heatmap_key, render_overlay(image, amap, vmax=1.0), "image/png")
    store.put(
        frame_key(verdict.line, verdict.capture_time, verdict.frame_id, "image/png"),
        original.tobytes(),
        "image/png",
        metadata={"product": verdict.product, "frame-id": verdict.frame_id},
    )
    return original.tobytes()


def test_an_operator_watches_opens_files_and_retrains_in_a_real_browser(console_stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    stack = console_stack
    wait = WebDriverWait(browser, WAIT_S)
    stack.plane.control.heartbeat(
        WorkerHeartbeat(
            worker_id="gpu-node-1", host="gpu-node-1", active_version="it-model-1", time=utc_now()
        ),
        ttl_s=300,
    )

    # Log in: a page asks for the login first, then comes back.
    browser.get(f"{stack.url}/")
    wait.until(seen.url_contains("/login"))
    browser.find_element(By.ID, "username").send_keys("operator")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "user"), "operator"))
    wait.until(lambda d: d.find_element(By.ID, "feed-status").get_attribute("data-state") == "live")
    assert browser.find_element(By.ID, "worker-gpu-node-1").is_displayed()

    # Verdicts streamed to the line's topic appear on the open page, NG ones in the gallery.
    parts = _verdicts(stack)
    originals = {
        v.frame_id: _store_like_a_worker(stack.plane.store, v, image, amap)
        for v, image, amap in parts
        if v.result == "ng"
    }
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    try:
        for verdict, _, _ in parts:
            producer.send(
                verdict_topic(verdict.line), key=verdict.camera.encode(), value=verdict.to_json()
            )
        producer.flush(timeout=WAIT_S)
    finally:
        producer.close()
    for verdict, _, _ in parts:
        wait.until(seen.presence_of_element_located((By.ID, f"v-{verdict.frame_id}")))
    row = browser.find_element(By.ID, f"v-{parts[2][0].frame_id}")
    assert "NG" in row.text and "P-4713" in row.text and "1002" in row.text
    ng = parts[5][0]
    card = wait.until(seen.presence_of_element_located((By.ID, f"ng-{ng.frame_id}")))
    heatmap = card.find_element(By.CSS_SELECTOR, "img.heatmap")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", heatmap) == 128)
    every_image_shown = (
        "const images = [...document.querySelectorAll('#gallery img')];"
        "return images.length === 4"
        " && images.every(i => i.complete && i.naturalWidth === 128);"
    )
    wait.until(lambda d: d.execute_script(every_image_shown))
    if target := os.environ.get("KENPIN_TEST_CONSOLE_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shot = Path(target).with_suffix(".tmp.png")
        assert browser.save_screenshot(str(shot))
        shutil.move(shot, target)

    # Open the NG heatmap: served by the console itself, not by a link into S3.
    href = card.find_element(By.CSS_SELECTOR, "a.heatmap-link").get_attribute("href")
    assert href.startswith(f"{stack.url}/images/")
    browser.get(href)
    wait.until(lambda d: d.execute_script("return document.contentType") == "image/png")
    assert browser.execute_script("return document.images[0].naturalWidth") == 128

    # "This part was fine": the frame's original lands in the normal store.
    browser.get(f"{stack.url}/")
    card = wait.until(seen.presence_of_element_located((By.ID, f"ng-{ng.frame_id}")))
    card.find_element(By.CSS_SELECTOR, "button.fine").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "notice"), "filed as a normal"))
    normal = normal_key(ng.product, ng.capture_time, ng.frame_id, "image/png")
    assert normal in browser.find_element(By.ID, "notice").text
    assert stack.plane.store.get(normal) == originals[ng.frame_id]
    card = browser.find_element(By.ID, f"ng-{ng.frame_id}")
    assert "filed as normal" in card.text

    # A retrain request, and its status following what the trainer records.
    browser.get(f"{stack.url}/retrain")
    browser.find_element(By.ID, "reason").send_keys("washers from the new supplier")
    browser.find_element(By.ID, "retrain-submit").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "retrain-status"), "queued"))
    request_id = browser.current_url.rsplit("/", 1)[1]
    outcome = stack.queue.outcome(request_id)
    assert outcome is not None and outcome.status == "queued"
    stack.queue.record(
        RetrainOutcome(
            request_id=request_id,
            status="running",
            stages={"snapshot": 1.4, "train": 12.5},
            trainer="trainer-1",
            updated=utc_now(),
        )
    )
    wait.until(seen.text_to_be_present_in_element((By.ID, "retrain-status"), "running"))
    assert "train" in browser.find_element(By.ID, "retrain").text

    # Releases with their gate report: the previous one made current again.
    stored = ModelManifest.model_validate_json(MANIFEST.read_text())
    for version, auroc in (("it-r1", 0.91), ("it-r2", 0.93)):
        manifest = stored.model_copy(
            update={"version": version, "metrics": {"gate": {"synthetic_auroc": auroc}}}
        )
        stack.plane.store.put(
            release_key(version, MANIFEST_FILE), manifest.model_dump_json().encode()
        )
        releases.make_current(stack.plane.control, manifest)
    browser.get(f"{stack.url}/releases")
    assert "0.93" in browser.find_element(By.ID, "release-it-r2").text
    browser.find_element(By.CSS_SELECTOR, "#release-it-r1 button.activate").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "notice"), "it-r1 is now current"))
    assert stack.plane.control.current().version == "it-r1"


def test_an_operator_reviews_a_lines_threshold_in_a_real_browser(console_stack, browser):
    """The Thresholds page on counts a worker wrote to Redis: the histogram, both thresholds,
    a confirmed defect; 'Release this threshold' queues a line-threshold request."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    stack = console_stack
    wait = WebDriverWait(browser, WAIT_S)
    control = stack.plane.control
    stored = ModelManifest.model_validate_json(MANIFEST.read_text())
    product, threshold = next(iter(stored.products.items()))
    manifest = stored.model_copy(update={"version": "it-cal-1"})
    control.set_current(manifest)
    # what a worker counts: 1,500 OK parts, 28 flagged; operators looked at 21 of those
    rng = np.random.default_rng(7)
    ok_scores = threshold.threshold * rng.beta(6, 3, 1500) * 0.99
    flagged = (
        threshold.threshold
        * np.r_[rng.uniform(1.0, 1.08, 18), [1.3, 1.6, 2.2], 1.1 + rng.uniform(0, 0.4, 7)]
    )
    counts: dict[str, int] = {}
    for score, judged in [*((s, "ok") for s in ok_scores), *((s, "ng") for s in flagged)]:
        name = bin_field(judged, score_bin(float(score), threshold.threshold))
        counts[name] = counts.get(name, 0) + 1
    control.add_scores({("it-cal-1", stack.line, product): counts}, ttl_s=600)
    for i, score in enumerate(flagged[:21]):
        control.add_finding(
            PartFinding(
                frame_id=f"{stack.line}-ng{i}",
                line=stack.line,
                product=product,
                model_version="it-cal-1",
                score=float(score),
                threshold=threshold.threshold,
                finding="fine" if i < 18 else "defective",
                who="operator@console",
                when=utc_now(),
            ),
            ttl_s=600,
        )

    browser.get(f"{stack.url}/calibration")
    wait.until(seen.url_contains("/login"))
    browser.find_element(By.ID, "username").send_keys("operator")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    section = wait.until(
        seen.presence_of_element_located((By.ID, f"calibration-{stack.line}-{product}"))
    )
    assert "1518 (1528 parts judged" in section.text  # 1,500 OK + 18 found fine
    assert "7" in section.find_element(By.XPATH, ".//tr[th='NG parts not reviewed']").text
    assert len(section.find_elements(By.CSS_SELECTOR, "svg rect.bar")) > 10
    assert len(section.find_elements(By.CSS_SELECTOR, "svg path.defect")) == 3
    assert section.find_elements(By.CSS_SELECTOR, "svg line.proposed")
    if target := os.environ.get("KENPIN_TEST_CALIBRATION_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shot = Path(target).with_suffix(".tmp.png")
        assert browser.save_screenshot(str(shot))
        shutil.move(shot, target)

    section.find_element(By.CSS_SELECTOR, "button.apply-threshold").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "retrain-status"), "queued"))
    request_id = browser.current_url.rsplit("/", 1)[1]
    newest = stack.queue.redis.xrevrange(stack.queue.stream, count=1)[0]
    assert newest[0].decode() == request_id
    request = RetrainRequest.model_validate_json(newest[1][b"request"])
    assert request.line_threshold is not None
    assert (request.line_threshold.line, request.line_threshold.base_version) == (
        stack.line,
        "it-cal-1",
    )
