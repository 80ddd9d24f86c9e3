"""Parity of the compiled runtimes with torch fp32, on real images, and refusal of bad exports.

A tiny release (EfficientNet-Lite0 pair at 64 px, random weights: parity is about
the arithmetic, not what was learned) is exported as the trainer exports it,
then served through every runtime. Thresholds sit at the median of torch's
scores, so half the images are NG and a runtime that flipped any verdict would
be caught. Real images come from the `KENPIN_REAL_DATA` folder (default
/work/shared/data/real); the tests skip where it is absent.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import save_artifact, write_manifest
from model.images import fit_to_size, load_image
from model.judgement import Judgement
from model.loading import load_model
from model.network import StudentTeacher
from model.parity import check_parity
from model.release import RefusalReason, ReleaseRefused, read_manifest, sha256_file
from model.runtimes import ONNX_FILE
from model.runtimes.onnx_export import export_onnx
from schemas.manifest import ModelManifest, ProductThreshold, ReleaseFile
from trainer.learning.config import DEFAULT_SCORING
from trainer.learning.export import add_onnx_export
from trainer.service.gate import GateImages, export_disagreements

SIZE = 64
REAL = Path(os.environ.get("KENPIN_REAL_DATA", "/work/shared/data/real"))
PRODUCTS = {"bottle": "mvtec_bottle", "tile": "mtd_magnetic_tile"}


def real_images(per_product: int = 4) -> dict[str, list[Path]]:
    """Good and defective test images of each product."""
    if not all((REAL / folder / "test").is_dir() for folder in PRODUCTS.values()):
        pytest.skip(f"no real images under {REAL}")
    images = {}
    for product, folder in PRODUCTS.items():
        paths = sorted((REAL / folder / "test").glob("*/*.*"))
        images[product] = paths[:: max(1, len(paths) // per_product)][:per_product]
    return images


def real_frames(images: dict[str, list[Path]]) -> tuple[list[np.ndarray], list[str]]:
    """The images as the worker prepares frames, and the product of each."""
    frames = [fit_to_size(load_image(p), SIZE) for paths in images.values() for p in paths]
    products = [product for product, paths in images.items() for _ in paths]
    return frames, products


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[str]]:
    """A tiny release with its ONNX export, thresholds at the median of torch's scores."""
    frames, products = real_frames(real_images())
    torch.manual_seed(0)
    network = StudentTeacher("efficientnet_lite0").eval()
    network.scoring = DEFAULT_SCORING  # what kenpin ships: pooled features, top-1 % score
    with torch.inference_mode():
        scores = network(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)).scores
    thresholds = {}
    for product in PRODUCTS:
        own = np.sort(scores.numpy()[[p == product for p in products]])
        thresholds[product] = float(own[len(own) // 2 - 1] + own[len(own) // 2]) / 2
    manifest = ModelManifest(
        version="parity",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=SIZE,
        scoring=DEFAULT_SCORING,
        files=[ReleaseFile(name="model.safetensors", sha256="0" * 64)],
        products={
            p: ProductThreshold(threshold=t, rule="median", normal_scores=0)
            for p, t in thresholds.items()
        },
    )
    folder = tmp_path_factory.mktemp("release")
    manifest = add_onnx_export(network, save_artifact(network, manifest, folder), folder)
    assert [f.name for f in manifest.files] == ["model.safetensors", ONNX_FILE]
    return folder, frames, products


@pytest.mark.parametrize(("runtime", "precision"), [("onnxruntime", "fp32"), ("openvino", "fp32")])
def test_each_runtime_judges_real_images_as_torch_fp32(release, runtime, precision):
    folder, frames, products = release
    reference = load_model(folder, device="cpu")
    served = load_model(folder, device="cpu", precision=precision, runtime=runtime)
    assert served.runtime == runtime
    report = check_parity(reference, served, frames, products)
    assert report.ok, report.disagreements
    verdicts = [
        s > reference.threshold(p) for s, p in zip(reference.scores(frames), products, strict=True)
    ]
    assert any(verdicts) and not all(verdicts)  # both verdicts were at stake


def test_a_disagreeing_runtime_is_listed_frame_by_frame(release):
    """The check itself: a runtime whose scores drift is caught, every frame named."""
    folder, frames, products = release
    reference = load_model(folder, device="cpu")
    drifting = load_model(folder, device="cpu", runtime="onnxruntime")
    engine = drifting.engine
    drifting.engine = lambda batch: Judgement(*(x * 1.05 for x in engine(batch)))  # 5 % too high
    report = check_parity(reference, drifting, frames, products)
    assert not report.ok
    assert len(report.disagreements) == len(frames)
    assert "frame 0 (bottle" in report.disagreements[0]


def test_a_tampered_export_is_refused(release, tmp_path):
    folder = shutil.copytree(release[0], tmp_path / "tampered")
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[-100] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ReleaseRefused) as refused:
        load_model(folder, device="cpu", runtime="onnxruntime")
    assert refused.value.reason is RefusalReason.SHA256_MISMATCH


def test_an_export_of_another_network_is_refused_by_parity(release, tmp_path):
    """Listed with its right sha256, but made from other weights: parity catches it."""
    folder = shutil.copytree(release[0], tmp_path / "wrong")
    torch.manual_seed(1)
    export_onnx(StudentTeacher("efficientnet_lite0").eval(), SIZE, folder / ONNX_FILE)
    manifest = read_manifest(folder)
    files = [ReleaseFile(name=f.name, sha256=sha256_file(folder / f.name)) for f in manifest.files]
    write_manifest(folder, manifest.model_copy(update={"files": files}))
    with pytest.raises(ReleaseRefused) as refused:
        load_model(folder, device="cpu", runtime="openvino")
    assert refused.value.reason is RefusalReason.PARITY_FAILED
    assert "disagreements" in refused.value.detail
    # the trainer's release gate refuses it too, on the real images
    reasons = export_disagreements(
        load_model(folder, device="cpu"), folder, GateImages(real_images()), ["onnxruntime"]
    )
    assert reasons and all(r.startswith("export fails parity") for r in reasons)


def on_threshold(model, product: str, threshold: float):
    """`model` with `product`'s threshold moved to `threshold`."""
    products = dict(model.manifest.products)
    products[product] = products[product].model_copy(update={"threshold": threshold})
    model.manifest = model.manifest.model_copy(update={"products": products})
    return model


@pytest.mark.parametrize(("nudge", "ok"), [(0.005, True), (0.02, False)])
def test_a_part_on_the_threshold_may_tip_only_within_the_tolerance(release, nudge, ok):
    """A frame scoring exactly at the threshold is NG for a runtime a hair above torch:
    accepted while the hair is within SCORE_TOLERANCE, refused beyond it."""
    folder, frames, products = release
    reference = load_model(folder, device="cpu")
    first = float(reference.scores(frames[:1])[0])
    reference = on_threshold(reference, products[0], first)
    tipped = load_model(folder, device="cpu", runtime="onnxruntime")
    engine = tipped.engine

    def higher(batch):
        judged = engine(batch)
        return Judgement(judged.scores + nudge * first, judged.maps)

    tipped.engine = higher
    report = check_parity(reference, tipped, frames[:1], products[:1])
    assert float(tipped.scores(frames[:1])[0]) > first  # the verdict did tip
    assert report.ok is ok, report.disagreements
