"""Every knob of the trainer service, read from `KENPIN_*` environment variables.

Declared in three places, each once: what the plant's operations share (Redis,
S3, logging, how long retrain outcomes live) in `operations.settings.OperationsSettings`;
the recipe, one setting per field of the training configuration
(`trainer.learning.config.RECIPE_FIELDS`: the loss weights one by one, scoring as
JSON); the service's own knobs here.

Example: ``KENPIN_RETRAIN_INTERVAL_S=86400 KENPIN_EPOCHS=50 kenpin-trainer serve``.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path
from typing import Any, Self

from pydantic import Field, create_model, model_validator

from model.runtimes import EXPORT_RUNTIMES, Runtime
from operations.settings import OperationsSettings
from schemas.gate import GatePolicy
from schemas.object_layout import ObjectKind
from trainer.learning.config import DEFAULT_QUANTILE, RECIPE_FIELDS


def _recipe_settings() -> type[OperationsSettings]:
    """OperationsSettings with a setting per field of the recipe."""
    fields: dict[str, Any] = {name: (info.annotation, info) for name, info in RECIPE_FIELDS.items()}
    return create_model("RecipeSettings", __base__=OperationsSettings, **fields)


def _policy_field(name: str) -> Any:
    """A setting declared by the gate policy's field: its default, bounds and description."""
    return copy.deepcopy(GatePolicy.model_fields[name])


class TrainerSettings(_recipe_settings()):  # type: ignore[misc]
    """Configuration of `kenpin-trainer serve` and the operator commands."""

    # --- control plane: Redis (where it is: PlaneSettings) ------------------------
    trainer_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lock_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="The training lock expires this long after its last renewal, so a "
        "trainer that dies mid-run does not block the others for ever; its retrain request, "
        "no longer renewed either, is taken over by another trainer after 3 times this long.",
    )

    # --- operations ----------------------------------------------------------------
    trainer_metrics_port: int = Field(
        default=9109,
        ge=0,
        le=65535,
        description="/metrics, /livez and /readyz of `kenpin-trainer serve`; 0 turns them off.",
    )
    trainer_metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the trainer's metrics and probe server binds. The endpoints have "
        "no authentication: loopback unless a deployment opts in (0.0.0.0 in a pod).",
    )
    trainer_livez_stall_s: float = Field(
        default=60.0,
        gt=0,
        description="/livez fails when the service loop has not turned for this long outside "
        "a run (a run holds the loop; its lock shows it is alive).",
    )
    trainer_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness `serve` lowers itself to at start: a retrain on the same "
        "cores as the workers takes only the CPU they leave (0: as the workers).",
    )

    # --- data lifecycle: S3 rules set by `kenpin-trainer lifecycle` and at `serve` --
    heatmaps_retention_days: int = Field(
        default=90,
        ge=0,
        description="Days an NG heatmap is kept in the bucket; 0 keeps it for ever.",
    )
    originals_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days the original frame stored beside a heatmap is kept; 0: for ever.",
    )
    normals_retention_days: int = Field(
        default=365,
        ge=0,
        description="Days a sampled normal is kept (the trainer uses the newest "
        "max_normals_per_product of a product); 0: for ever.",
    )

    # --- when to train -----------------------------------------------------------
    retrain_interval_s: float = Field(
        default=0.0, ge=0, description="Retrain this often on the schedule; 0: only on request."
    )

    # --- what to train on --------------------------------------------------------
    holdout_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Normals held out of training to measure false alarms; chosen by a hash "
        "of the key, so an image stays held out in every later snapshot.",
    )
    max_normals_per_product: int = Field(
        default=2000, ge=2, description="Most recent normals per product used in one run."
    )
    min_normals_per_product: int = Field(
        default=4, ge=2, description="A product with fewer normals is left out of the run."
    )
    anomalies_dir: Path | None = Field(
        default=None,
        description="Labelled anomalies in MVTec layout (<product>/test/<defect>/*.png); "
        "the gate compares image AUROC on them.",
    )
    work_dir: Path = Field(default=Path("runs/trainer"), description="Scratch space of runs.")

    # --- how to train: the recipe (trainer.learning.config), and -----------------------------
    threshold_quantile: float = Field(
        default=DEFAULT_QUANTILE,
        ge=0.5,
        le=1.0,
        description="Normal-score quantile that becomes a product's threshold.",
    )
    product_threshold_quantiles: dict[str, float] = Field(
        default_factory=dict,
        description="Per-product threshold quantiles overriding threshold_quantile (1 - the "
        'false-alarm rate a product\'s line can afford), JSON: {"tile": 0.98}.',
    )
    progress: bool = Field(default=True, description="Progress bars on the terminal.")

    # --- the gate ----------------------------------------------------------------
    export_runtimes: list[Runtime] = Field(
        default=list(EXPORT_RUNTIMES),
        description="A release ships its ONNX export, checked through these runtimes against "
        "torch on the held-out images before it is published (a disagreeing export refuses "
        "the release); empty: releases ship without export and workers serve them with torch.",
    )
    # tolerances against the current release and floors for any release (`GatePolicy`)
    max_false_alarm_increase: float = _policy_field("max_false_alarm_increase")
    max_auroc_drop: float = _policy_field("max_auroc_drop")
    gate_max_false_alarm_rate: float = _policy_field("max_false_alarm_rate")
    gate_min_synthetic_auroc: float = _policy_field("min_synthetic_auroc")
    gate_min_synthetic_recall: float = _policy_field("min_synthetic_recall")

    @model_validator(mode="after")
    def _export_runtimes_run_exports(self) -> Self:
        torch_only = [name for name in self.export_runtimes if name not in EXPORT_RUNTIMES]
        if torch_only:
            raise ValueError(
                f"export_runtimes {torch_only} do not run an export: give some of "
                f"{list(EXPORT_RUNTIMES)}"
            )
        return self

    @property
    def gate_policy(self) -> GatePolicy:
        """What the release gate judges a candidate against."""
        return GatePolicy(
            max_false_alarm_increase=self.max_false_alarm_increase,
            max_auroc_drop=self.max_auroc_drop,
            max_false_alarm_rate=self.gate_max_false_alarm_rate,
            min_synthetic_auroc=self.gate_min_synthetic_auroc,
            min_synthetic_recall=self.gate_min_synthetic_recall,
        )

    @property
    def retention_days(self) -> dict[ObjectKind, int]:
        """Days each kind of stored frame is kept (0: for ever), as `planes.storage` takes them."""
        return {
            "heatmap": self.heatmaps_retention_days,
            "original": self.originals_retention_days,
            "normal": self.normals_retention_days,
        }
