"""The ablation keeps every variant it has measured, across separate runs into one folder."""

import json

from trainer.research.ablation import run_ablation


def test_a_second_run_adds_its_variant_to_the_summary(synthetic_data, tmp_path):
    run_ablation(synthetic_data, tmp_path, 0, 8, 0, False, ["a_stfpm"])
    results = run_ablation(synthetic_data, tmp_path, 0, 8, 0, False, ["b_tuned_kd1e-2_lr0.03"])
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert set(summary) == set(results) == {"a_stfpm", "b_tuned_kd1e-2_lr0.03"}
    for report in summary.values():
        assert set(report["products"]) == {"tile", "washer"}
        assert report["training"]["epochs"] == 0
