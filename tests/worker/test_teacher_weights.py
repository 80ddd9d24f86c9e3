"""The default teacher must really be ImageNet-trained: random weights must never slip in."""

import cv2
import pytest
import torch

from worker.model.backbones import (
    TeacherWeightsError,
    build_pyramid,
    build_teacher,
    load_imagenet_classifier,
)

ESPRESSO = 967  # ImageNet-1k class index


def test_lite0_classifies_a_real_photograph_as_espresso():
    coffee = pytest.importorskip("skimage.data").coffee()  # a photo of a cup of espresso
    image = cv2.resize(coffee, (224, 224), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        probabilities = load_imagenet_classifier("efficientnet_lite0")(x).softmax(1)
    assert int(probabilities.argmax()) == ESPRESSO
    assert float(probabilities[0, ESPRESSO]) > 0.5


def test_teacher_pyramid_has_strides_4_8_16_and_is_frozen():
    teacher = build_teacher("efficientnet_lite0")
    features = teacher(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(24, 16, 16), (40, 8, 8), (112, 4, 4)]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_teacher_weights_with_a_wrong_hash_are_refused(tmp_path):
    fake = tmp_path / "weights.pth"
    torch.save(build_pyramid("efficientnet_lite0").state_dict(), fake)
    with pytest.raises(TeacherWeightsError, match="sha256"):
        load_imagenet_classifier("efficientnet_lite0", fake)


def test_resnet18_needs_a_weights_file():
    with pytest.raises(TeacherWeightsError, match="weights file"):
        build_teacher("resnet18")
