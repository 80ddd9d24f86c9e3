"""The retraining service trains the recipe of its settings, with a request's overrides."""

import pytest
from pydantic import ValidationError

from schemas.manifest import Scoring
from trainer.learning.config import (
    DEPLOYMENT_FIELDS,
    PAPER,
    RECIPE_FIELDS,
    REQUEST_KEYS,
    LossWeights,
    TrainConfig,
)
from trainer.service.retrain import RunFailed, training_config
from trainer.service.settings import TrainerSettings


def test_settings_are_the_recipe(monkeypatch):
    monkeypatch.setenv("KENPIN_LR", "0.03")
    monkeypatch.setenv("KENPIN_BF16", "true")
    monkeypatch.setenv("KENPIN_CHECKPOINT", "synthetic")
    monkeypatch.setenv("KENPIN_SCORING", '{"scales": [1, 2], "feature_pool": 3}')
    monkeypatch.setenv("KENPIN_HARD_FRACTION", "0.1")
    config = training_config(TrainerSettings())
    assert (config.lr, config.bf16, config.checkpoint) == (0.03, True, "synthetic")
    assert config.scoring == Scoring(scales=(1, 2), feature_pool=3)
    assert config.losses.hard_fraction == 0.1


def test_a_request_overrides_the_recipe_for_its_run_only():
    settings = TrainerSettings(epochs=50)
    config = training_config(settings, {"epochs": 3, "scoring": {"top_fraction": 0.01}})
    assert config.epochs == 3 and config.scoring.top_fraction == 0.01
    assert training_config(settings).epochs == 50


@pytest.mark.parametrize(
    "recipe", [{"optimizer": "adam"}, {"checkpoint": "best"}, {"scoring": {"feature_pool": 2}}]
)
def test_an_unknown_or_invalid_recipe_fails_the_run_with_the_reason(recipe):
    with pytest.raises(RunFailed, match="recipe"):
        training_config(TrainerSettings(), recipe)


def test_the_settings_have_a_setting_per_field_of_the_recipe_with_its_default():
    config = TrainConfig()
    for name, field in RECIPE_FIELDS.items():
        assert name in TrainerSettings.model_fields, name
        if name != "device":  # PlaneSettings' (the same default)
            assert TrainerSettings.model_fields[name] is not field  # a copy, not shared
            assert TrainerSettings.model_fields[name].default == field.default
    assert training_config(TrainerSettings.model_construct()) == config


def test_a_request_may_not_change_what_the_deployment_decides():
    assert not DEPLOYMENT_FIELDS & set(REQUEST_KEYS)
    assert {"epochs", "spatial_kd", "scoring", "checkpoint"} <= set(REQUEST_KEYS)
    with pytest.raises(RunFailed, match="unknown recipe keys"):
        training_config(TrainerSettings(), {"device": "cuda"})


def test_the_manifests_record_of_a_config_keeps_its_shape():
    recorded = TrainConfig(losses=LossWeights(spatial_kd=0.01)).as_dict()
    assert list(recorded) == [
        "architecture", "backbone", "teacher_weights", "image_size", "epochs", "batch_size",
        "lr", "lr_schedule", "momentum", "weight_decay", "dcam", "losses", "val_fraction",
        "seed", "bf16", "checkpoint", "denoise_fraction", "memory_patches", "memory_stride",
        "device", "scoring",
    ]  # fmt: skip
    assert recorded["architecture"] == "student_teacher"
    assert recorded["losses"]["spatial_kd"] == 0.01
    assert recorded["scoring"] == {
        "scales": [2], "feature_pool": 3, "top_fraction": 0.01, "plus_unpooled": True
    }  # fmt: skip
    assert TrainConfig.model_validate(recorded) == TrainConfig(losses=LossWeights(spatial_kd=0.01))


def test_a_record_written_before_architecture_and_plus_unpooled_still_reads():
    recorded = PAPER.as_dict()
    del recorded["architecture"], recorded["scoring"]["plus_unpooled"]
    assert TrainConfig.model_validate(recorded) == PAPER


def test_a_config_is_frozen_and_copied_with_changes():
    config = TrainConfig()
    with pytest.raises(ValidationError):
        config.epochs = 3
    assert config.model_copy(update={"epochs": 3}).epochs == 3 and config.epochs == 12


def test_bf16_units_are_read_off_the_cpu_flags(tmp_path):
    from model.runtime import cpu_has_bf16_units

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not cpu_has_bf16_units(avx2)
    assert cpu_has_bf16_units(amx)
    assert cpu_has_bf16_units(tmp_path / "missing")  # unknown: no warning


def test_bf16_is_chosen_only_where_it_is_native(monkeypatch):
    import torch

    from model import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: False)
    assert runtime.fastest_precision(torch.device("cpu")) == "fp32"
    assert runtime.fastest_precision(torch.device("cuda")) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: True)
    assert runtime.fastest_precision(torch.device("cpu")) == "bf16"
