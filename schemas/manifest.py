"""The model manifest: what a released artifact is, so a worker can verify and load it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

MANIFEST_SCHEMA_VERSION = 1


class Normalisation(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ProductThreshold(BaseModel):
    """Decision threshold of one product and the rule that produced it."""

    threshold: float
    rule: str = Field(description="how the threshold was calibrated, in words")
    normal_scores: int = Field(description="held-out normal images it was calibrated on")


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
    training: dict = Field(default_factory=dict, description="losses, DCAM, epochs, seed, ...")
    metrics: dict = Field(default_factory=dict)
    data: dict = Field(default_factory=dict, description="summary of the training data")
    parent_version: str | None = None
