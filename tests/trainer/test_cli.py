"""`kenpin-trainer`: flags derived from TrainConfig, one function per command, a fast --help."""

import subprocess
import sys

import pytest

from schemas.manifest import Scoring
from trainer import cli
from trainer.learning.config import LossWeights, TrainConfig


def _parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_importing_the_command_line_imports_no_torch():
    # in a fresh interpreter: this test process has imported torch long ago
    code = "import sys, trainer.cli, worker.cli; print(sorted({'torch', 'timm'} & {*sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_of_every_command_builds_without_torch():
    code = (
        "import sys, contextlib, io\n"
        "from trainer import cli\n"
        "for argv in (['--help'], ['train', '--help'], ['sweep', '--help'],"
        " ['ablation', '--help'], ['retrain', '--help'], ['eval', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        cli.main(argv)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_every_field_of_the_config_has_a_flag_and_the_defaults_are_the_configs():
    args = _parse("train", "--data", "d", "--out", "o")
    assert cli._config(args) == TrainConfig()
    assert args.run is cli.cmd_train
    assert args.threshold_quantile == 0.99


def test_flags_set_nested_loss_weights_and_scoring():
    args = _parse(
        "train", "--data", "d", "--out", "o",
        "--epochs", "3", "--spatial-kd", "0.01", "--hard-fraction", "0.2",
        "--scales", "2,1", "--feature-pool", "3", "--bf16", "--dcam", "both",
        "--teacher-weights", "w.pth", "--denoise-fraction", "0.25", "--no-plus-unpooled",
        "--top-fraction", "0",
    )  # fmt: skip
    config = cli._config(args)
    assert config.epochs == 3 and config.bf16 and config.dcam == "both"
    assert config.losses == LossWeights(spatial_kd=0.01, hard_fraction=0.2)
    assert config.scoring == Scoring(scales=(1, 2), feature_pool=3)
    assert config.teacher_weights == "w.pth" and config.denoise_fraction == 0.25


def test_an_invalid_value_is_a_usage_error(capsys):
    argv = ["train", "--data", "d", "--out", "o", "--feature-pool", "2"]
    assert cli.main(argv) == 2
    assert "feature_pool must be odd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse("train", "--data", "d", "--out", "o", "--dcam", "cbam")


def test_research_commands_keep_their_short_budgets_and_say_so(capsys):
    assert _parse("sweep", "--data", "d", "--out", "o").epochs == 5
    assert _parse("ablation", "--data", "d", "--out", "o").epochs == 20
    with pytest.raises(SystemExit):
        _parse("sweep", "--help")
    assert f"{TrainConfig().epochs} in a training run" in " ".join(capsys.readouterr().out.split())


def test_each_command_is_a_function():
    assert _parse("release", "rollback").run.__name__ == "release_rollback"
    assert _parse("workers").run.__name__ == "workers"
    assert _parse("bench").run is cli.cmd_bench


def test_retrain_refuses_an_unknown_or_invalid_recipe_before_asking(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse("retrain", "--reason", "r", "--recipe", '{"optimizer": "adam"}')
    assert exit_.value.code == 2
    assert "unknown recipe keys ['optimizer']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse("retrain", "--reason", "r", "--recipe", '{"checkpoint": "best"}')
    assert "invalid recipe" in capsys.readouterr().err
    args = _parse("retrain", "--reason", "r", "--recipe", '{"epochs": 30, "momentum": 0.8}')
    assert args.recipe == {"epochs": 30, "momentum": 0.8}
