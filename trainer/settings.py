"""Every knob of the trainer service in one place, read from `KENPIN_*` environment variables.

Example: ``KENPIN_RETRAIN_INTERVAL_S=86400 KENPIN_EPOCHS=50 kenpin-trainer serve``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.manifest import Scoring


class TrainerSettings(BaseSettings):
    """Configuration of `kenpin-trainer serve` and the operator commands."""

    model_config = SettingsConfigDict(env_prefix="KENPIN_", extra="ignore")

    # --- control plane: Redis ----------------------------------------------------
    redis_url: str = "redis://localhost:6379/0"
    control_prefix: str = Field(default="", description="Prefix of every kenpin Redis key.")
    trainer_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lock_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="The training lock expires this long after its last renewal, so a "
        "trainer that dies mid-run does not block the others for ever; its retrain request, "
        "no longer renewed either, is taken over by another trainer after 3 times this long.",
    )
    outcome_ttl_s: float = Field(default=30 * 86400, gt=0, description="Outcomes kept this long.")

    # --- blobs: S3 ---------------------------------------------------------------
    s3_endpoint: str = "localhost:9000"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "kenpin"
    s3_secure: bool = False

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

    # --- how to train ------------------------------------------------------------
    backbone: str = "efficientnet_lite0"
    teacher_weights: Path | None = None
    image_size: int = Field(default=256, ge=32)
    epochs: int = Field(default=50, ge=0)
    batch_size: int = Field(default=16, ge=1)
    seed: int = 0
    threshold_quantile: float = Field(default=0.99, ge=0.5, le=1.0)
    lr: float = Field(default=0.1, gt=0, description="SGD learning rate.")
    bf16: bool = Field(default=False, description="bf16 autocast for the student.")
    dcam: Literal["none", "channel", "spatial", "both"] = "channel"
    spatial_kd: float = Field(default=1e-3, ge=0, description="Weight of spatial KD.")
    hard_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Channel CD on this hardest fraction only; 0: all."
    )
    checkpoint: Literal["val_map", "synthetic"] = Field(
        default="val_map",
        description="Epoch kept: lowest mean map of held-out normals, or best AUROC against "
        "defects drawn on them.",
    )
    scoring: Scoring = Field(
        default_factory=Scoring,
        description='How maps and scores are made, JSON: {"scales": [1, 2], "feature_pool": 3, '
        '"top_fraction": 0.01}.',
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where training runs: CUDA when present with auto."
    )
    progress: bool = Field(default=True, description="Progress bars on the terminal.")

    # --- the gate ----------------------------------------------------------------
    max_false_alarm_increase: float = Field(
        default=0.02,
        ge=0,
        description="A candidate whose false-alarm rate on held-out normals exceeds the "
        "current release's by more than this is not released.",
    )
    max_auroc_drop: float = Field(
        default=0.02,
        ge=0,
        description="A candidate whose image AUROC on labelled anomalies is below the current "
        "release's by more than this is not released.",
    )

    gate_max_false_alarm_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A first release (nothing to compare against) whose false-alarm rate on "
        "held-out normals exceeds this is not released.",
    )
    gate_min_synthetic_auroc: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="A first release whose image AUROC on defects drawn onto held-out "
        "normals is below this is not released (a blind model scores 0.5).",
    )
    gate_min_synthetic_recall: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="No release may flag fewer than this fraction of the defects drawn onto "
        "held-out normals: a model that flags nothing never goes live.",
    )

    # --- operations --------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
