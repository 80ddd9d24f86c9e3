"""The model manifest: what a released artifact is, so a worker can verify and load it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST_SCHEMA_VERSION = 1


class Normalisation(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ProductThreshold(BaseModel):
    """Decision threshold of one product and the rule that produced it."""

    threshold: float
    rule: str = Field(description="how the threshold was calibrated, in words")
    normal_scores: int = Field(description="held-out normal images it was calibrated on")


class Scoring(BaseModel):
    """How the anomaly map and the image score are made from the two feature pyramids.

    The defaults are the method as published (all scales summed, plain features,
    score = max of the map); a release may ship another choice, measured on
    held-out labelled images, and every scorer (worker, gate, evaluation) reads it
    from here, so a model is always scored the way it was calibrated.
    """

    model_config = ConfigDict(frozen=True)

    scales: tuple[int, ...] = Field(
        default=(0, 1, 2),
        description="pyramid levels summed into the map (0: stride 4, 1: stride 8, 2: stride 16)",
    )
    feature_pool: int = Field(
        default=1,
        ge=1,
        description="k x k local averaging of teacher and student features before the "
        "cosine (1: none); odd",
    )
    top_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="image score = mean of this top fraction of map values (0: the maximum)",
    )

    @field_validator("feature_pool")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("feature_pool must be odd (the map keeps its size)")
        return value

    @field_validator("scales")
    @classmethod
    def _some_scales(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or len(set(value)) != len(value) or min(value) < 0:
            raise ValueError("scales: distinct pyramid levels, at least one")
        return tuple(sorted(value))

    @property
    def label(self) -> str:
        """A short name for tables: `s0+1+2 pool1 max`, `s1+2 pool3 top1%`."""
        score = f"top{self.top_fraction * 100:g}%" if self.top_fraction else "max"
        return f"s{'+'.join(map(str, self.scales))} pool{self.feature_pool} {score}"


class ModelManifest(BaseModel):
    """Sidecar JSON of a model artifact. The weights file is trusted only if its sha256 matches."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    version: str
    created: datetime
    backbone: str
    image_size: int
    normalisation: Normalisation
    weights_file: str = "model.safetensors"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    products: dict[str, ProductThreshold]
    scoring: Scoring = Field(
        default_factory=Scoring,
        description="how maps and scores are made; absent in older manifests (the defaults)",
    )
    training: dict = Field(default_factory=dict, description="losses, DCAM, epochs, seed, ...")
    metrics: dict = Field(default_factory=dict)
    data: dict = Field(default_factory=dict, description="summary of the training data")
    parent_version: str | None = None
