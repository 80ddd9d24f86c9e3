"""The gate's decision on measured candidate and current release: one final, typed report."""

from schemas.control import RetrainOutcome
from schemas.gate import GatePolicy, GateReport, ModelMeasure, ProductMeasure
from trainer.service.gate import decide, pooled


def _measured(
    far: tuple[int, int],
    auroc: float | None,
    products=("a",),
    synthetic: tuple[float, float] = (0.9, 0.5),
) -> ModelMeasure:
    entry = ProductMeasure(
        threshold=1.0,
        normals=far[1],
        false_alarms=far[0],
        false_alarm_rate=far[0] / far[1],
        synthetic_auroc=synthetic[0],
        synthetic_recall=synthetic[1],
        anomalies=None if auroc is None else 10,
        image_auroc=auroc,
    )
    products_measured = {p: entry for p in products}
    return ModelMeasure(
        version="v", products=products_measured, **pooled(products_measured.values()).model_dump()
    )


def _tolerances(false_alarms: float, auroc: float, **floors) -> GatePolicy:
    return GatePolicy(max_false_alarm_increase=false_alarms, max_auroc_drop=auroc, **floors)


def test_first_release_passes_the_absolute_floors():
    d = decide(_measured((0, 10), 0.9), None, [])
    assert d.released and "floors" in d.reasons[0]
    assert d.current is None and d.candidate.compared is None


def test_first_release_below_a_floor_is_refused():
    too_many_alarms = decide(_measured((16, 100), None), None, [])
    assert not too_many_alarms.released and "false alarms" in too_many_alarms.reasons[0]
    blind = decide(_measured((0, 100), None, synthetic=(0.5, 0.5)), None, [])
    assert not blind.released and "drawn defects" in blind.reasons[0]


def test_a_model_that_flags_nothing_never_passes():
    silent = _measured((0, 100), 0.95, synthetic=(0.9, 0.0))
    assert not decide(silent, None, []).released
    d = decide(silent, _measured((2, 100), 0.9), ["a"], _tolerances(0.02, 0.02))
    assert not d.released and "flags (almost) nothing" in d.reasons[0]
    lenient = _tolerances(0.02, 0.02, min_synthetic_recall=0.0)
    assert decide(silent, _measured((2, 100), 0.9), ["a"], lenient).released


def test_lower_auroc_on_drawn_defects_refuses():
    worse = _measured((0, 10), None, synthetic=(0.7, 0.5))
    current = _measured((0, 10), None, synthetic=(0.9, 0.5))
    d = decide(worse, current, ["a"], _tolerances(0.02, 0.05))
    assert not d.released and "drawn defects" in d.reasons[0]


def test_more_false_alarms_refuse():
    d = decide(_measured((3, 10), 0.9), _measured((1, 10), 0.9), ["a"], _tolerances(0.02, 0.02))
    assert not d.released and "false alarms" in d.reasons[0]


def test_lower_auroc_refuses_within_tolerance_passes():
    policy = _tolerances(0.02, 0.05)
    assert not decide(_measured((0, 10), 0.8), _measured((0, 10), 0.9), ["a"], policy).released
    passed = decide(_measured((0, 10), 0.86), _measured((0, 10), 0.9), ["a"], policy)
    assert passed.released and passed.candidate.compared.products == ["a"]


def test_dropping_a_served_product_refuses():
    d = decide(
        _measured((0, 10), 0.9), _measured((0, 10), 0.9, ("a", "b")), ["a", "b"], _tolerances(0, 0)
    )
    assert not d.released and "['b']" in d.reasons[0]


def test_an_export_that_disagrees_refuses_inside_the_decision():
    reasons = ["export fails parity: openvino fp32 on 4 frames: 1 disagreement"]
    first = decide(_measured((0, 10), 0.9), None, [], export_reasons=reasons)
    later = decide(_measured((0, 10), 0.9), _measured((0, 10), 0.9), ["a"], None, reasons)
    for report in (first, later):
        assert not report.released and report.reasons == reasons


def test_the_report_rides_in_the_outcome_and_back():
    report = decide(_measured((0, 10), 0.86), _measured((0, 10), 0.9), ["a"])
    outcome = RetrainOutcome(
        request_id="1-0", status="released", gate=report, updated="2026-12-07T00:00:00Z"
    )
    again = RetrainOutcome.model_validate_json(outcome.model_dump_json())
    assert again.gate == report and isinstance(again.gate, GateReport)
    older = RetrainOutcome.model_validate(
        {"request_id": "1-0", "status": "queued", "gate": {}, "updated": "2026-12-07T00:00:00Z"}
    )
    assert older.gate is None  # recorded before the gate had measured anything
