"""The model manifest: what a released artifact is, so a worker can verify and load it.

A release is a manifest and the files it lists (`files`: name and sha256 of
each, the weights first). The worker builds the network its `architecture`
names (`model.registry`), loads every file only once its sha256 matched,
and scores it the way `scoring` says.

Version 1 manifests (before `architecture` and `files`) named one weights file
in `weights_file` and its digest in `sha256`; they are still read, as a
student-teacher release of that one file, and written back as version 2.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.object_layout import MANIFEST_FILE

MANIFEST_SCHEMA_VERSION = 2
#: The architecture of every release written before manifests named one.
DEFAULT_ARCHITECTURE = "student_teacher"
#: The weights file of a version 1 manifest that did not name one.
LEGACY_WEIGHTS_FILE = "model.safetensors"


class Normalisation(BaseModel):
    """Per-channel mean and std of the network's input, on the [0, 1] scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ReleaseFile(BaseModel):
    """One file of a release; it is loaded only if its sha256 matches."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$",
        max_length=255,
        description="plain file name beside the manifest (no folder, not hidden)",
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _not_the_manifest(cls, value: str) -> str:
        if value == MANIFEST_FILE:
            raise ValueError(f"a release file cannot be named {MANIFEST_FILE}")
        return value


class ProductThreshold(BaseModel):
    """Decision threshold of one product, the rule that produced it, and what it promises.

    The three rate fields are absent in releases calibrated before the rule stated
    its promise.
    """

    threshold: float
    rule: str = Field(description="how the threshold was calibrated, in words")
    normal_scores: int = Field(description="held-out normal images it was calibrated on")
    target_false_alarm_rate: float | None = Field(
        default=None, ge=0, le=1, description="the false-alarm rate the calibration aimed at"
    )
    expected_false_alarm_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="the fraction of normal parts, judged like the held-out ones, expected "
        "above the threshold (on average over calibration sets; distribution-free)",
    )
    false_alarm_interval: tuple[float, float] | None = Field(
        default=None,
        description="central 95 % interval of the false-alarm rate this calibration set "
        "delivers (Beta distributed), for normals like the held-out ones",
    )


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
    plus_unpooled: bool = Field(
        default=False,
        description="with feature_pool > 1, add the plain (unpooled) distance of each scale "
        "too: averaged features see thin defects, plain ones small compact defects",
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
        pool = f"pool{self.feature_pool}{'+1' if self.plus_unpooled else ''}"
        return f"s{'+'.join(map(str, self.scales))} {pool} {score}"


def _memory_stride(value: int) -> int:
    if value not in (8, 16):
        raise ValueError("must be 8 or 16 (the teacher's stride-8 and -16 maps)")
    return value


#: The patch grid a memory head is queried on: the teacher's stride-8 or stride-16 map.
MemoryStride = Annotated[int, AfterValidator(_memory_stride)]


class ProductMemory(BaseModel):
    """One product's share of a memory head."""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(ge=1, description="memory rows chosen from this product's normals")
    weight: float = Field(
        gt=0,
        description="what a distance to one of these rows is multiplied by before it is "
        "added to the student–teacher map",
    )


class MemoryHead(BaseModel):
    """A nearest-neighbour memory of the teacher's normal patches, fused with the
    student–teacher map (`model.memory_head`); its rows and their weights ship
    in the weights file (`memory`, `memory_weights`).

    Fitted once a student is trained (`trainer.learning.memory_fit`): each product's
    rows are chosen from its training normals, and weighted so that, on that product's
    held-out normals, a standard deviation of the memory's image scores counts as much
    as one of the student–teacher's.
    """

    model_config = ConfigDict(frozen=True)

    patches: int = Field(ge=1, description="rows of the memory, all products together")
    channels: int = Field(ge=1, description="features per row")
    stride: MemoryStride = Field(
        description="the pixel stride of the patch grid the memory is queried on"
    )
    products: dict[str, ProductMemory] = Field(default_factory=dict)


class ModelManifest(BaseModel):
    """Sidecar JSON of a model artifact. Its files are trusted only if their sha256 match."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    version: str
    created: datetime
    architecture: str = Field(
        default=DEFAULT_ARCHITECTURE,
        description="the network to build (a name registered in model.registry); "
        "absent in version 1 manifests (student_teacher)",
    )
    backbone: str | None = Field(
        default=None,
        description="the feature extractor, for architectures built on one "
        "(student_teacher: the teacher's and the student's)",
    )
    image_size: int
    normalisation: Normalisation | None = Field(
        default=None,
        description="input mean and std the network applies; when present it must agree "
        "with the backbone (a release that disagrees is refused)",
    )
    files: list[ReleaseFile] = Field(
        min_length=1, description="the release's files, weights first, each with its sha256"
    )
    products: dict[str, ProductThreshold]
    line_thresholds: dict[str, dict[str, ProductThreshold]] = Field(
        default_factory=dict,
        description="line -> product -> a threshold calibrated on that line's own normals "
        "(`operations.line_calibration`), in place of the product's on that line only",
    )
    scoring: Scoring = Field(
        default_factory=Scoring,
        description="how maps and scores are made; absent in older manifests (the defaults)",
    )
    memory_head: MemoryHead | None = Field(
        default=None,
        description="the teacher's normal-patch memory fused into the map (absent: the "
        "student–teacher map alone)",
    )
    training: dict = Field(default_factory=dict, description="losses, DCAM, epochs, seed, ...")
    metrics: dict = Field(default_factory=dict)
    data: dict = Field(default_factory=dict, description="summary of the training data")
    parent_version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """A version 1 manifest (`weights_file` + `sha256`) as the one file of a release."""
        if not isinstance(data, dict) or "files" in data or "sha256" not in data:
            return data
        data = dict(data)
        name = data.pop("weights_file", None) or LEGACY_WEIGHTS_FILE
        data["files"] = [{"name": name, "sha256": data.pop("sha256")}]
        data["schema_version"] = MANIFEST_SCHEMA_VERSION
        return data

    @field_validator("files")
    @classmethod
    def _distinct_names(cls, value: list[ReleaseFile]) -> list[ReleaseFile]:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError(f"file names must be distinct: {names}")
        return value

    @model_validator(mode="after")
    def _line_thresholds_of_known_products(self) -> ModelManifest:
        for line, entries in self.line_thresholds.items():
            unknown = sorted(set(entries) - set(self.products))
            if unknown:
                raise ValueError(f"line {line!r} has thresholds for unknown products {unknown}")
        return self

    def threshold_entry(self, product: str, line: str | None = None) -> ProductThreshold | None:
        """The threshold a frame of `product` on `line` is judged by: the line's own, else the
        product's; None for a product this release does not know."""
        if line is not None and product in self.line_thresholds.get(line, {}):
            return self.line_thresholds[line][product]
        return self.products.get(product)

    @property
    def digest(self) -> str:
        """One sha256 over the names and digests of the files: which exact files a release is.

        With the version, it tells an announced release from the one stored under
        its name (they must be equal) and keys what a worker refused.
        """
        digest = hashlib.sha256()
        for file in self.files:
            digest.update(f"{file.name}\t{file.sha256}\n".encode())
        return digest.hexdigest()
