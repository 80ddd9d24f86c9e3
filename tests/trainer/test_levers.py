"""The post-hoc lever study runs on a release and reports every lever for every product."""

from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.train import train
from trainer.research import levers


def test_every_lever_is_reported_for_every_product(tmp_path, synthetic_data, capsys):
    result = train(synthetic_data, TrainConfig(image_size=64, epochs=1, batch_size=8), False)
    export(result, tmp_path / "model", version="l1")
    assert levers.main(["--model", str(tmp_path / "model"), "--data", str(synthetic_data)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "AUROC" in line]
    assert len(lines) == 2 * 5  # tile and washer, five levers each
    for line in lines:
        assert "shipped: FAR" in line and "recall@2%FAR" in line
