"""The torch runtime's batch path, and the runtime setting's fallbacks and refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from timm.layers import Conv2dSame

from model.artifact import save_artifact
from model.loading import load_model
from model.network import StudentTeacher
from model.runtime import InspectionModel
from model.runtimes import choose_runtime
from model.runtimes.folding import serving_copy
from schemas.manifest import ModelManifest, ProductThreshold, ReleaseFile
from trainer.learning.export import add_onnx_export
from worker.settings import WorkerSettings

SIZE = 64


def manifest() -> ModelManifest:
    return ModelManifest(
        version="runtimes",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=SIZE,
        files=[ReleaseFile(name="model.safetensors", sha256="0" * 64)],
        products={"any": ProductThreshold(threshold=1.0, rule="test", normal_scores=0)},
    )


def trained_looking() -> StudentTeacher:
    """A pair whose batch norms are not the identity, as after training."""
    torch.manual_seed(0)
    network = StudentTeacher("efficientnet_lite0")
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network.eval()


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return list(rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8))


def test_batch_16_scores_equal_batch_1_scores():
    model = InspectionModel(trained_looking(), manifest(), device="cpu")
    batch = frames(16)
    together = model.judge(batch)
    alone = [model.judge([frame]) for frame in batch]
    np.testing.assert_allclose(together.scores, [j.scores[0] for j in alone], rtol=1e-5)
    np.testing.assert_allclose(together.maps, [j.maps[0] for j in alone], rtol=1e-4, atol=1e-5)


def test_the_served_copy_scores_as_the_network_does():
    """Batch norms folded, same-padding made static: equal up to float rounding."""
    network = trained_looking()
    x = torch.from_numpy(np.stack(frames(3))).permute(0, 3, 1, 2).float()
    folded = serving_copy(network, x[:1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(isinstance(m, Conv2dSame) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # untouched
    with torch.inference_mode():
        (maps, scores), (folded_maps, folded_scores) = network(x), folded(x)
    torch.testing.assert_close(folded_scores, scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded_maps, maps, rtol=1e-4, atol=1e-5)


def test_a_release_without_export_is_served_by_torch(tmp_path):
    save_artifact(trained_looking(), manifest(), tmp_path)
    model = load_model(tmp_path, device="cpu", runtime="onnxruntime")
    assert model.runtime == "torch"
    assert model.judge(frames(2)).scores.shape == (2,)


def test_a_runtime_is_refused_at_a_precision_it_does_not_run():
    with pytest.raises(ValidationError, match="openvino runs at"):
        WorkerSettings(runtime="openvino", precision="fp16")
    assert WorkerSettings(runtime="openvino", precision="bf16").runtime == "openvino"


@pytest.mark.parametrize("streams", [0, 1])
def test_openvino_returns_each_frames_result_in_its_place(tmp_path, streams):
    """A batch is spread over requests that finish in any order; results keep the frames'."""
    from model.runtimes.onnx_export import export_onnx
    from model.runtimes.openvino_engine import OpenVinoEngine

    path = export_onnx(
        serving_copy(trained_looking(), torch.zeros(1, 3, SIZE, SIZE)),
        SIZE,
        tmp_path / "network.onnx",
    )
    engine = OpenVinoEngine(path, "fp32", streams=streams)
    batch = np.stack(frames(7))
    judged = engine(batch)
    assert judged.scores.shape == (7,) and judged.maps.shape == (7, SIZE, SIZE)
    for index, frame in enumerate(batch):
        alone = engine(frame[None])
        assert judged.scores[index] == pytest.approx(alone.scores[0], rel=1e-5)
        np.testing.assert_allclose(judged.maps[index], alone.maps[0], rtol=1e-4, atol=1e-5)
    assert len(set(judged.scores.tolist())) == 7  # distinct frames: a mix-up could not pass


@pytest.mark.parametrize(
    ("choice", "device", "precision", "chosen"),
    [
        ("auto", "cpu", "fp32", "openvino"),  # the faster on a CPU
        ("auto", "cpu", "bf16", "openvino"),
        ("auto", "cpu", "fp16", "torch"),  # OpenVINO's CPU plugin here runs no fp16
        ("auto", "cuda", "fp32", "torch"),  # the OpenVINO plugin here is the CPU's
        ("torch", "cpu", "fp32", "torch"),  # a runtime named is the runtime served
        ("onnxruntime", "cuda", "fp16", "onnxruntime"),
    ],
)
def test_auto_chooses_the_faster_runtime_for_the_device(choice, device, precision, chosen):
    assert choose_runtime(choice, device, precision) == chosen


def test_the_worker_chooses_its_runtime_by_default():
    assert WorkerSettings().runtime == "auto"


def test_auto_serves_a_release_with_export_through_openvino_on_a_cpu(tmp_path):
    network = trained_looking()
    add_onnx_export(network, save_artifact(network, manifest(), tmp_path), tmp_path)
    model = load_model(tmp_path, device="cpu", runtime="auto")
    assert model.runtime == "openvino"
    reference = load_model(tmp_path, device="cpu", runtime="torch")
    np.testing.assert_allclose(
        model.judge(frames(2)).scores, reference.judge(frames(2)).scores, rtol=1e-3
    )
