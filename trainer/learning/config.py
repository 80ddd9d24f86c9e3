"""The training configuration, declared once: every hyperparameter of a run.

`TrainConfig` is what a run trains with, and `as_dict()` is what the artifact's
manifest records. The front ends read its fields instead of listing them again:

- `kenpin-trainer train` (and the research commands) has a flag per field, the
  nested loss weights and scoring flattened: ``--spatial-kd``, ``--scales 1,2``
  (`flat_fields`, `from_flat`);
- the trainer service's settings have an environment variable per field of the
  *recipe*, the loss weights flattened, scoring as JSON: ``KENPIN_EPOCHS``,
  ``KENPIN_SPATIAL_KD``, ``KENPIN_SCORING`` (`RECIPE_FIELDS`);
- a retrain request may override the recipe's fields for its run, except what
  the trainer's deployment decides (`REQUEST_KEYS`, `recipe_config`).

No torch here: the command line's help and the settings import this module.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from model.runtimes import Device
from schemas.manifest import MemoryStride, Scoring

#: The attention blocks of DCAM (trainer/learning/dcam.py): none, channel (SE-like),
#: spatial, both (CBAM).
AttentionKind = Literal["none", "channel", "spatial", "both"]

#: Normal-score quantile that becomes a product's threshold (trainer/learning/calibrate.py).
DEFAULT_QUANTILE = 0.99


#: kenpin's default scoring: the stride-16 map alone (the finer scales add texture noise),
#: the cosine of 3 x 3 averaged features plus that of the plain ones, and the image score
#: the mean of the top 1 % of the map. Releases without a scoring use the paper's
#: (`Scoring()`: scales summed, plain features, max).
DEFAULT_SCORING = Scoring(scales=(2,), feature_pool=3, plus_unpooled=True, top_fraction=0.01)


class LossWeights(BaseModel):
    """Weights of the four terms; 0 switches a term off. Default: the paper's best mix.

    The KL terms are sums over 176 channels (Lite0) of T^2-scaled divergences and
    start about 1000x larger than the cosine terms (teacher features have std ~7,
    so a softmax over positions at T=1 is nearly one-hot). T=4 softens it and the
    weight 1e-3 brings spatial KD to the size of channel CD at initialisation
    (measured: ~2.6 vs ~3.0 on real images), so neither term drowns the other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_cd: float = Field(default=1.0, ge=0, description="Weight of channel CD.")
    spatial_cd: float = Field(default=0.0, ge=0, description="Weight of spatial CD.")
    spatial_kd: float = Field(default=1e-3, ge=0, description="Weight of spatial KD.")
    channel_kd: float = Field(default=0.0, ge=0, description="Weight of channel KD.")
    temperature: float = Field(default=4.0, gt=0, description="Softmax temperature of the KDs.")
    hard_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Train channel CD on this largest fraction of pixel distances only (0: all).",
    )

    def as_dict(self) -> dict[str, float]:
        return self.model_dump()


class TrainConfig(BaseModel):
    """Every hyperparameter of a run, recorded in the artifact's manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field(
        default="student_teacher",
        description="Registered architecture to train and serve (model.registry for "
        "serving, trainer.learning.learners for training).",
    )
    backbone: str = Field(
        default="efficientnet_lite0",
        description="Feature extractor of teacher and student (a name in "
        "model.backbones.BACKBONES).",
    )
    teacher_weights: str | None = Field(
        default=None, description="ImageNet weights file of the teacher (resnet18 needs one)."
    )
    image_size: int = Field(default=256, ge=32, description="Side of the square input, pixels.")
    epochs: int = Field(default=12, ge=0, description="Passes over the training normals.")
    batch_size: int = Field(default=16, ge=1, description="Images per SGD step.")
    lr: float = Field(default=0.1, gt=0, description="SGD learning rate.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine",
        description="Learning rate over the run: constant, or cosine decay from lr to "
        "1 % of it at the last step (the curve stops oscillating between epochs).",
    )
    momentum: float = Field(default=0.9, ge=0, description="SGD momentum.")
    weight_decay: float = Field(default=1e-4, ge=0, description="SGD weight decay.")
    dcam: AttentionKind = Field(
        default="channel", description="Attention on the student's features while training."
    )
    losses: LossWeights = Field(
        default_factory=LossWeights, description="Weights of the distillation terms."
    )
    val_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Normals of each product held out to choose the epoch and calibrate.",
    )
    seed: int = Field(default=0, description="Seeds the split, the order and the initialisation.")
    bf16: bool = Field(
        default=False, description="bf16 autocast of the student's forward and backward."
    )
    checkpoint: Literal["val_map", "synthetic"] = Field(
        default="val_map",
        description="Epoch kept: lowest mean map of held-out normals (the authors'), or best "
        "AUROC of held-out normals against defects drawn on them "
        "(trainer/learning/synthetic_anomalies.py); both are measured every epoch.",
    )
    denoise_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Denoising student: this fraction of training images is shown to the "
        "student with a defect drawn on it, while the target stays the teacher's features "
        "of the clean image; the student learns to answer normal where a part is not, "
        "instead of generalising to defects (0: the paper's plain distillation).",
    )
    memory_patches: int = Field(
        default=2000,
        ge=0,
        description="Memory head: this many of the teacher's normal patches per product, "
        "chosen once the student is trained, whose nearest-neighbour distance map is added "
        "to the student-teacher map (model/memory_head.py; 0: the student-teacher "
        "map alone, as the paper).",
    )
    memory_stride: MemoryStride = Field(
        default=16,
        description="Pixel stride of the patch grid the memory head is queried on: 16, or 8 "
        "(four times the patches, and the cost).",
    )
    device: Device = Field(
        default="auto", description="Where training runs; auto: CUDA when present, else the CPU."
    )
    scoring: Scoring = Field(
        default_factory=lambda: DEFAULT_SCORING,
        description="How maps and image scores are made (shipped in the manifest, used for "
        'calibration); JSON in a setting or a recipe: {"scales": [1, 2], "feature_pool": 3, '
        '"top_fraction": 0.01}.',
    )

    def as_dict(self) -> dict:
        """The manifest's record of the run: plain JSON values, nested as the fields."""
        return self.model_dump(mode="json")


#: The paper's loss weights as published: channel CD + spatial KD on every pixel.
PAPER_LOSSES = LossWeights(hard_fraction=0.0)
#: The paper's recipe as published (docs/method.md): plain distillation at a constant
#: rate for 50 epochs, scales summed, max of the map. The ablation and the sweep's
#: trials start from it, so that kenpin's default can move on without changing what
#: they measure.
PAPER = TrainConfig(
    epochs=50,
    lr_schedule="constant",
    denoise_fraction=0.0,
    memory_patches=0,
    losses=PAPER_LOSSES,
    scoring=Scoring(),
)


#: The fields of the nested models that `kenpin-trainer train` sets one by one.
CLI_EXPANDED = ("losses", "scoring")
#: ... and those of the trainer's recipe (settings, retrain requests): scoring is one value.
RECIPE_EXPANDED = ("losses",)


def flat_fields(expand: Collection[str] = RECIPE_EXPANDED) -> dict[str, FieldInfo]:
    """TrainConfig's fields by name, those of the nested models in `expand` in their place.

    A nested field defaults to its value in TrainConfig's default (kenpin's default
    scoring is not `Scoring()`, the paper's), so that unset flat values make `TrainConfig()`.
    """
    fields: dict[str, FieldInfo] = {}
    for name, info in TrainConfig.model_fields.items():
        if name in expand:
            default = info.get_default(call_default_factory=True)
            inner = [
                (inner_name, _with_default(inner_info, getattr(default, inner_name)))
                for inner_name, inner_info in _nested(name).model_fields.items()
            ]
        else:
            inner = [(name, info)]
        for inner_name, inner_info in inner:
            if inner_name in fields:
                raise TypeError(f"{inner_name} is declared twice in TrainConfig's flat view")
            fields[inner_name] = inner_info
    return fields


def _with_default(info: FieldInfo, default: Any) -> FieldInfo:
    if info.default == default and info.default_factory is None:
        return info
    changed = copy.copy(info)
    changed.default, changed.default_factory = default, None
    return changed


def from_flat(values: Mapping[str, Any], expand: Collection[str] = RECIPE_EXPANDED) -> TrainConfig:
    """The config of flat `values` (names of `flat_fields(expand)`); unset fields default.

    Raises pydantic's ValidationError for an unknown name or an invalid value.
    """
    owner = {inner: name for name in expand for inner in _nested(name).model_fields}
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key in owner:
            nested.setdefault(owner[key], {})[key] = value
        else:
            top[key] = value
    return TrainConfig.model_validate(top | nested)


def _nested(name: str) -> type[BaseModel]:
    annotation = TrainConfig.model_fields[name].annotation
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise TypeError(f"TrainConfig.{name} is not a model whose fields can be flattened")
    return annotation


#: The trainer's recipe: the fields of its settings that make its TrainConfig.
RECIPE_FIELDS: dict[str, FieldInfo] = flat_fields(RECIPE_EXPANDED)

#: What the trainer's deployment decides and a retrain request may not change: the
#: architecture and model family, a weights file on the trainer's disk, its hardware.
DEPLOYMENT_FIELDS = frozenset({"architecture", "backbone", "teacher_weights", "device"})

#: What a retrain request's `recipe` may override, for its run only.
REQUEST_KEYS: tuple[str, ...] = tuple(k for k in RECIPE_FIELDS if k not in DEPLOYMENT_FIELDS)


class RecipeError(ValueError):
    """A retrain request's recipe names an unknown key or gives an invalid value."""


def recipe_config(
    recipe: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The config of a recipe (flat values; unset ones default) with a request's overrides.

    Raises RecipeError, which says which keys are unknown or what is invalid.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(REQUEST_KEYS))
    if unknown:
        raise RecipeError(f"unknown recipe keys {unknown}; known: {list(REQUEST_KEYS)}")
    try:
        return from_flat({**recipe, **overrides}, RECIPE_EXPANDED)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg']}" for e in exc.errors()
        )
        raise RecipeError(f"invalid recipe: {problems}") from exc
