"""The default teacher must really be ImageNet-trained: random weights must never slip in."""

import cv2
import pytest
import torch

from model.backbones import (
    TeacherWeightsError,
    build_pyramid,
    build_teacher,
    load_imagenet_classifier,
)

ESPRESSO = 967  # ImageNet-1k class index


LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("backbone", LITES)
def test_lite_classifies_a_real_photograph_as_espresso(backbone):
    coffee = pytest.importorskip("skimage.data").coffee()  # a photo of a cup of espresso
    size = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    side = size[backbone]  # each network's ImageNet input size
    image = cv2.resize(coffee, (side, side), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        probabilities = load_imagenet_classifier(backbone)(x).softmax(1)
    assert int(probabilities.argmax()) == ESPRESSO
    assert float(probabilities[0, ESPRESSO]) > 0.5


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [
        ("efficientnet_lite0", (24, 40, 112)),
        ("efficientnet_lite1", (24, 40, 112)),
        ("efficientnet_lite2", (24, 48, 120)),
    ],
)
def test_teacher_pyramid_has_strides_4_8_16_and_is_frozen(backbone, channels):
    teacher = build_teacher(backbone)
    features = teacher(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [
        (channels[0], 16, 16),
        (channels[1], 8, 8),
        (channels[2], 4, 4),
    ]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


@pytest.mark.parametrize("backbone", LITES)
def test_teacher_weights_with_a_wrong_hash_are_refused(tmp_path, backbone):
    fake = tmp_path / "weights.pth"
    torch.save(build_pyramid(backbone).state_dict(), fake)
    with pytest.raises(TeacherWeightsError, match="sha256"):
        load_imagenet_classifier(backbone, fake)


def test_resnet18_needs_a_weights_file():
    with pytest.raises(TeacherWeightsError, match="weights file"):
        build_teacher("resnet18")
