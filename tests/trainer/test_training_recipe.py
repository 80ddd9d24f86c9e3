"""The retraining service trains the recipe of its settings, with a request's overrides."""

import pytest

from schemas.manifest import Scoring
from trainer.service import RunFailed, training_config
from trainer.settings import TrainerSettings


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
