"""The sweep's tune/holdout halves, and one tiny sweep end to end."""

import json

from model.network import StudentTeacher
from trainer.learning.data import discover, split_test
from trainer.research.sweep import LabelledScorer, format_sweep, run_sweep


def test_tune_and_holdout_halves_partition_each_defect_type(synthetic_data):
    for product in discover(synthetic_data):
        tune = split_test(product.test, "tune")
        holdout = split_test(product.test, "holdout")
        assert {t.path for t in tune}.isdisjoint(t.path for t in holdout)
        assert sorted(t.path for t in tune + holdout) == sorted(t.path for t in product.test)
        for defect in {t.defect for t in product.test}:
            n_tune = sum(t.defect == defect for t in tune)
            n_hold = sum(t.defect == defect for t in holdout)
            assert 0 <= n_tune - n_hold <= 1  # stratified: each type split in half


def test_sweep_scores_every_epoch_and_resumes_from_its_journal(synthetic_data, tmp_path):
    trials = ["a_stfpm", "b_paper_kd1e-3_T4"]
    rows = run_sweep(synthetic_data, tmp_path, trials, 2, 8, 0, False, image_size=64)
    assert [len(rows[t]) for t in trials] == [2, 2]
    row = rows["a_stfpm"][0]
    for key in ("mean/tune", "mean/holdout", "washer/tune", "tile/holdout"):
        assert 0.0 <= row[key] <= 1.0
    assert row["val_mean_map"] > 0.0
    journal = (tmp_path / "sweep.jsonl").read_text().splitlines()
    assert len(journal) == 4 and json.loads(journal[0])["trial"] == "a_stfpm"
    again = run_sweep(synthetic_data, tmp_path, trials, 2, 8, 0, False, image_size=64)
    assert again == rows  # nothing retrained: every trial is complete in the journal
    assert "a_stfpm" in format_sweep(rows)
    assert (tmp_path / "sweep.png").stat().st_size > 0
    for trial in trials:  # each trial's kept checkpoint is an artifact
        assert (tmp_path / trial / "model" / "manifest.json").is_file()
        assert (tmp_path / trial / "epochs.png").stat().st_size > 0


def test_a_trial_with_another_teacher_gets_its_own_test_features(synthetic_data):
    """Lite0 and Lite2 differ in channels (112 / 120 at stride 16): a sweep that trains
    both must not score the second with the first one's cached teacher features."""
    lite0, lite2 = StudentTeacher("efficientnet_lite0"), StudentTeacher("efficientnet_lite2")
    first = LabelledScorer.reuse(None, synthetic_data, 64, lite0)
    assert LabelledScorer.reuse(first, synthetic_data, 64, lite0) is first
    second = LabelledScorer.reuse(first, synthetic_data, 64, lite2)
    assert second is not first
    assert second.scores(lite2.eval()).shape == (len(first.images),)


def test_cosine_schedule_decays_the_rate_to_one_percent_at_the_last_step():
    import torch

    from trainer.learning.config import TrainConfig
    from trainer.learning.train import learning_rate_schedule

    param = torch.nn.Parameter(torch.zeros(1))
    for kind, last in (("constant", 0.1), ("cosine", 0.001)):
        optimiser = torch.optim.SGD([param], lr=0.1)
        config = TrainConfig(lr=0.1, epochs=3, lr_schedule=kind)
        schedule = learning_rate_schedule(optimiser, config, steps_per_epoch=4)
        rates = []
        for _ in range(12):
            rates.append(optimiser.param_groups[0]["lr"])
            optimiser.step()
            schedule.step()
        assert rates[0] == 0.1
        assert abs(optimiser.param_groups[0]["lr"] - last) < 1e-9
        assert rates == sorted(rates, reverse=True)
