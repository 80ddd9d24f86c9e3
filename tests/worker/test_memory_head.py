"""The memory head: nearest-neighbour distances, the fused map, and a release that ships one."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from model.anomaly_map import score_pyramids
from model.artifact import save_artifact
from model.loading import load_model, load_network
from model.memory_head import as_rows, nearest_distances, patch_features
from model.network import StudentTeacher
from model.runtimes import ONNX_FILE
from schemas.manifest import MemoryHead, ModelManifest, ProductMemory, ProductThreshold, ReleaseFile
from trainer.learning.export import add_onnx_export

SIZE = 64


def test_nearest_distance_is_the_weighted_distance_to_the_closest_row():
    torch.manual_seed(0)
    rows, memory = torch.randn(50, 8), torch.randn(30, 8)
    weights = torch.rand(30) + 0.5
    distances = torch.cdist(rows, memory)
    expected = distances.amin(1) * weights[distances.argmin(1)]
    torch.testing.assert_close(nearest_distances(rows, memory, weights), expected)
    # a row that is in the memory is at distance zero, whatever its weight
    assert nearest_distances(memory[:3], memory, weights).abs().max() < 1e-3


@pytest.mark.parametrize("stride, grid", [(16, 4), (8, 8)])
def test_patch_features_lie_on_the_strides_grid_and_are_unit_length_per_scale(stride, grid):
    teacher = [torch.randn(2, 24, 16, 16), torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    features = patch_features(teacher, stride)
    assert features.shape == (2, 152, grid, grid)
    norms = features[:, :40].norm(dim=1), features[:, 40:].norm(dim=1)
    for norm in norms:
        torch.testing.assert_close(norm, torch.ones_like(norm))


def _network_with_memory(images: torch.Tensor) -> StudentTeacher:
    """A pair whose memory holds every patch of `images` (so their memory map is zero)."""
    torch.manual_seed(0)
    network = StudentTeacher("efficientnet_lite0").eval()
    with torch.no_grad():
        rows = as_rows(patch_features(network.teacher_features(network.normalise(images)), 16))
    head = MemoryHead(
        patches=len(rows),
        channels=rows.shape[1],
        stride=16,
        products={"any": ProductMemory(rows=len(rows), weight=2.0)},
    )
    network.set_memory(rows, torch.full((len(rows),), 2.0), head)
    return network


def _manifest(network: StudentTeacher) -> ModelManifest:
    return ModelManifest(
        version="memory",
        created=datetime.now(UTC),
        image_size=SIZE,
        files=[ReleaseFile(name="model.safetensors", sha256="0" * 64)],
        products={"any": ProductThreshold(threshold=1.0, rule="test", normal_scores=0)},
        **network.manifest_fields(),
    )


@torch.no_grad()
def test_the_memory_map_is_added_and_is_zero_on_the_memorys_own_patches():
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    network = _network_with_memory(images)
    x = network.normalise(images)
    alone = score_pyramids(
        network.teacher_features(x), network.student_features(x), (SIZE, SIZE), network.scoring
    ).maps
    fused = network(images).maps
    # ~0 on its own rows: sqrt of the rounding error of ||q||² − 2q·m + ||m||², times weight 2
    torch.testing.assert_close(fused, alone, atol=1e-2, rtol=0)
    other = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    assert (network(other).maps - alone).mean() > 0.1  # elsewhere, a positive weighted distance
    network.drop_memory()
    torch.testing.assert_close(network(images).maps, alone)


def test_a_release_with_a_memory_head_loads_serves_and_exports_faithfully(tmp_path):
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    network = _network_with_memory(images)
    manifest = save_artifact(network, _manifest(network), tmp_path)
    manifest = add_onnx_export(network, manifest, tmp_path)  # listed only if it passed parity
    assert ONNX_FILE in {f.name for f in manifest.files}
    loaded, read = load_network(tmp_path)
    assert read.memory_head == network.memory_head
    frames = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = network(torch.from_numpy(frames).permute(0, 3, 1, 2)).scores.numpy()
    served = load_model(tmp_path, device="cpu", runtime="onnxruntime")  # parity checked again
    np.testing.assert_allclose(served.judge(list(frames)).scores, expected, rtol=1e-4, atol=1e-4)
