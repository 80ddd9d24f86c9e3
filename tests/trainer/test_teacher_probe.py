"""The teacher's nearest-neighbour probe: a memory of normal patches, scores by distance."""

import torch

from model.network import StudentTeacher
from trainer.learning.data import GOOD, TestImage, discover
from trainer.research.teacher_probe import build_memory, probe_product, score_tests


def test_an_image_whose_every_patch_is_in_memory_scores_zero(synthetic_data):
    """With a memory larger than all train patches, each train image is its own neighbour."""
    product = discover(synthetic_data)[0]
    model = StudentTeacher.pretrained("efficientnet_lite0")
    cpu = torch.device("cpu")
    memory, _, fed = build_memory(model, product.normals, 64, 10**6, 0, 4, cpu, "memory")
    assert fed == len(product.normals)
    assert len(memory) == len(product.normals) * (64 // 8) ** 2  # every stride-8 patch
    as_tests = [TestImage(path, GOOD, None) for path in product.normals[:3]]
    scores, _ = score_tests(model, as_tests, memory, 64, 4, 256, cpu, "test")
    assert scores.shape == (3,)
    assert scores.max() < 1e-2  # cdist in fp32 via matmul: ~1e-3, not 0 (vectors have norm 1.4)


def test_probe_reports_every_part_and_defect(synthetic_data):
    product = discover(synthetic_data)[0]
    model = StudentTeacher.pretrained("efficientnet_lite0")
    result = probe_product(
        model, "efficientnet_lite0", product, 64, 100, 0, 4, 256, torch.device("cpu")
    )
    assert set(result.auroc) == {"tune", "holdout", "all"}
    defects = {item.defect for item in product.test} - {GOOD}
    assert set(result.per_defect) == defects
    assert result.extras["memory_vectors"] == 100
    assert all(0.0 <= v <= 100.0 for v in [*result.auroc.values(), *result.per_defect.values()])
