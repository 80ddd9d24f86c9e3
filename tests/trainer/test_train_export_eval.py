"""Tiny end-to-end runs: train -> export -> verified load -> evaluate, and determinism."""

import json

import numpy as np
import pytest
import torch

from model.loading import load_model, load_network
from model.release import ReleaseRefused
from trainer.learning.config import TrainConfig
from trainer.learning.evaluate import evaluate_artifact
from trainer.learning.export import export, recalibrate
from trainer.learning.train import train

TINY = TrainConfig(image_size=64, epochs=2, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def trained(synthetic_data):
    return train(synthetic_data, TINY, progress=False)


def test_training_records_history_and_best_epoch(trained):
    assert len(trained.history) == 2
    assert trained.best_epoch in (1, 2)
    assert set(trained.val_scores) == {"tile", "washer"}
    assert trained.data["products"]["washer"] == {"train": 8, "val": 2}


def test_training_is_deterministic(synthetic_data, trained):
    again = train(synthetic_data, TINY, progress=False)
    for a, b in zip(
        trained.network.student.state_dict().values(),
        again.network.student.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_export_loads_without_pickle_and_serves(tmp_path, trained):
    manifest = export(trained, tmp_path / "model", version="t1")
    assert (
        json.loads((tmp_path / "model" / "manifest.json").read_text())["files"][0]["sha256"]
        == manifest.files[0].sha256
    )
    assert set(manifest.products) == {"tile", "washer"}
    model = load_model(tmp_path / "model", device="cpu")
    judged = model.judge([np.zeros((64, 64, 3), np.uint8)] * 3)
    assert judged.scores.shape == (3,) and judged.maps.shape == (3, 64, 64)
    # the served model computes what the trainer's network computes
    with torch.inference_mode():
        reference = trained.network(torch.zeros(3, 3, 64, 64)).scores
    np.testing.assert_allclose(judged.scores, reference.numpy(), rtol=1e-5)


def test_tampered_weights_are_refused(tmp_path, trained):
    export(trained, tmp_path / "model", version="t2")
    weights = tmp_path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ReleaseRefused, match="sha256"):
        load_network(tmp_path / "model")


def test_a_pickle_in_place_of_weights_is_refused(tmp_path, trained):
    manifest = export(trained, tmp_path / "model", version="t3")
    weights = tmp_path / "model" / "model.safetensors"
    torch.save(trained.network.state_dict(), weights)  # a pickle, even with a matching hash
    from model.release import sha256_file

    file = manifest.files[0].model_copy(update={"sha256": sha256_file(weights)})
    (tmp_path / "model" / "manifest.json").write_text(
        manifest.model_copy(update={"files": [file]}).model_dump_json()
    )
    with pytest.raises(ReleaseRefused, match="safetensors"):
        load_network(tmp_path / "model")


def test_evaluation_writes_report_and_pictures(tmp_path, trained, synthetic_data):
    export(trained, tmp_path / "model", version="t4")
    report = evaluate_artifact(
        tmp_path / "model", synthetic_data, tmp_path / "eval", progress=False
    )
    assert set(report["products"]) == {"tile", "washer"}
    for metrics in report["products"].values():
        for key in ("image_auroc", "pixel_auroc", "au_pro"):
            assert 0.0 <= metrics[key] <= 1.0
        assert set(metrics["per_defect"]) == {"hole", "missing", "scratch", "stain"}
        assert "precision" in metrics["at_threshold"]
        promise = metrics["promise"]  # the manifest's stated false-alarm rate, and the measured
        low, high = promise["predicted_false_alarms"]
        assert promise["kept"] == (low <= promise["false_alarms"] <= high)
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "scores.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "heatmaps.png").stat().st_size > 1000
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["mean"]


def test_a_release_is_recalibrated_on_its_own_held_out_normals(tmp_path, trained, synthetic_data):
    old = export(trained, tmp_path / "model", version="t5")
    new = recalibrate(
        tmp_path / "model", synthetic_data, tmp_path / "again", per_product={"tile": 0.5}
    )
    assert new.parent_version == "t5" and new.files == old.files  # same network, same bytes
    for product, entry in new.products.items():
        held_out = trained.data["products"][product]["val"]
        assert entry.normal_scores == held_out
        assert entry.expected_false_alarm_rate is not None and entry.false_alarm_interval
    assert new.products["tile"].target_false_alarm_rate == 0.5
    assert load_model(tmp_path / "again", device="cpu").threshold("tile") == pytest.approx(
        new.products["tile"].threshold
    )


def test_zero_epochs_still_exports_a_calibrated_artifact(tmp_path, synthetic_data):
    result = train(
        synthetic_data, TrainConfig(image_size=64, epochs=0, batch_size=8), progress=False
    )
    manifest = export(result, tmp_path / "model")
    assert all(np.isfinite(p.threshold) for p in manifest.products.values())
