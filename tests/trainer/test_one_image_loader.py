"""One image loader for every path: a JPEG with an EXIF rotation scores the same everywhere.

`cv2.imread` turns a JPEG by its EXIF Orientation tag; the worker decodes the
sensor's pixels (IMREAD_IGNORE_ORIENTATION). Were the trainer to read files with
`cv2.imread`, a model would learn and be gated on rotated parts and then judge
unrotated ones. Here one EXIF-rotated JPEG goes through the trainer's loader
(training and calibration), the gate's scoring and the worker's loop, and must
give the same pixels and the same score from one model.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.images import DEFAULT_MAX_PIXELS, load_image
from model.network import StudentTeacher
from model.runtime import InspectionModel
from schemas.frames import FrameHeaders
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold
from schemas.verdicts import Verdict
from tests.worker.test_worker_loop import FakeConsumer, FakeProducer, Record, make_worker, run_steps
from trainer.learning.data import read_images, read_mask, read_rgb
from trainer.learning.train import student_scores, teacher_pyramid
from trainer.service.gate import score_files
from worker.decode import decode_frame

SIZE = 64


def exif_orientation_segment(orientation: int) -> bytes:
    """An APP1 Exif segment holding one tag, Orientation (0x0112), as a big-endian TIFF IFD."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)  # byte order, magic, offset of IFD0
    tiff += struct.pack(">H", 1)  # one entry
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value
    tiff += struct.pack(">I", 0)  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def rotated_jpeg(path: Path, pixels: np.ndarray, orientation: int = 6) -> Path:
    """`pixels` (RGB) as a JPEG whose EXIF says "rotate 90 degrees clockwise to display"."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    data = encoded.tobytes()
    path.write_bytes(data[:2] + exif_orientation_segment(orientation) + data[2:])
    return path


@pytest.fixture(scope="module")
def model() -> InspectionModel:
    manifest = ModelManifest(
        version="loader-1",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=SIZE,
        normalisation=Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3),
        sha256="0" * 64,
        products={
            "part": ProductThreshold(threshold=0.0, rule="every part is NG", normal_scores=1)
        },
    )
    torch.manual_seed(0)  # a random but repeatable network: only its consistency matters
    return InspectionModel(StudentTeacher("efficientnet_lite0"), manifest, device="cpu")


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    """A tall (80 x 48), asymmetric part: a turn changes both its shape and its content."""
    rng = np.random.default_rng(7)
    pixels = np.zeros((80, 48, 3), np.uint8)
    pixels[:20] = (200, 40, 40)  # a red band at the top
    pixels[20:, :12] = (40, 200, 40)  # a green band down the left
    pixels += rng.integers(0, 30, pixels.shape, dtype=np.uint8)
    return rotated_jpeg(tmp_path_factory.mktemp("exif") / "part.jpg", pixels)


def test_the_file_is_rotated_by_imread_and_not_by_the_worker(part):
    """The premise: this JPEG's EXIF tag turns it in `cv2.imread`, not in the worker's decoder."""
    assert cv2.imread(str(part)).shape[:2] == (48, 80)  # turned to landscape
    assert decode_frame(part.read_bytes(), "image/jpeg", DEFAULT_MAX_PIXELS).shape[:2] == (80, 48)


def test_training_gate_and_worker_see_the_same_pixels_and_score(model, part):
    worker_pixels = model.prepare(decode_frame(part.read_bytes(), "image/jpeg", DEFAULT_MAX_PIXELS))
    np.testing.assert_array_equal(
        load_image(part), decode_frame(part.read_bytes(), "image/jpeg", 1 << 30)
    )
    # training and calibration read with read_images, the gate and evaluation with read_rgb
    training_pixels = read_images([part], SIZE)
    np.testing.assert_array_equal(training_pixels[0], worker_pixels)
    np.testing.assert_array_equal(read_rgb(part, SIZE), worker_pixels)

    # the worker: the frame through the real loop, from Kafka record to verdict
    headers = FrameHeaders(
        frame_id="exif-1",
        line="l1",
        camera="cam-1",
        product="part",
        capture_time=datetime.now(UTC),
        content_type="image/jpeg",
    )
    record = Record(
        "kenpin.frames.l1", 0, 0, b"cam-1", part.read_bytes(), headers.to_kafka_headers()
    )
    producer = FakeProducer()
    worker = make_worker(model, FakeConsumer([[record]]), producer)
    run_steps(worker, 1)
    verdicts = [Verdict.from_json(v) for t, v in producer.sent if t.startswith("kenpin.verdicts")]
    assert [v.frame_id for v in verdicts] == ["exif-1"]
    worker_score = verdicts[0].score

    # the gate scores files exactly as the worker scores the frame
    gate_score = float(score_files(model, [part])[0])
    assert gate_score == worker_score

    # training's calibration scores (its own batched teacher/student pass) agree to rounding
    teacher = teacher_pyramid(model.network, training_pixels)
    training_score = float(student_scores(model.network, training_pixels, teacher).scores[0])
    assert training_score == pytest.approx(worker_score, rel=1e-5)

    # and the same file read the imread way would have been judged differently
    turned = cv2.cvtColor(cv2.imread(str(part)), cv2.COLOR_BGR2RGB)
    assert float(model.judge([model.prepare(turned)]).scores[0]) != pytest.approx(
        worker_score, rel=1e-5
    )


def test_a_mask_is_read_unturned_like_its_image(tmp_path):
    mask = np.zeros((80, 48, 3), np.uint8)
    mask[:20] = 255
    path = rotated_jpeg(tmp_path / "mask.jpg", mask)
    read = read_mask(path, SIZE)
    assert read[:10].all() and not read[-10:].any()  # the top band stays at the top


def test_only_frame_formats_are_read(tmp_path):
    bmp = tmp_path / "part.bmp"
    cv2.imwrite(str(bmp), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="bmp"):
        read_rgb(bmp, SIZE)
