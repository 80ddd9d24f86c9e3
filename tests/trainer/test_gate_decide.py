"""The gate's decision on measured candidate and current release."""

from trainer.service.gate import Floors, decide


def _measured(
    far: tuple[int, int],
    auroc: float | None,
    products=("a",),
    synthetic: tuple[float, float] = (0.9, 0.5),
) -> dict:
    entry = {
        "normals": far[1],
        "false_alarms": far[0],
        "synthetic_auroc": synthetic[0],
        "synthetic_recall": synthetic[1],
    }
    if auroc is not None:
        entry["image_auroc"] = auroc
    return {"products": {p: dict(entry) for p in products}}


def test_first_release_passes_the_absolute_floors():
    d = decide(_measured((0, 10), 0.9), None, [], 0.02, 0.02)
    assert d.released and "floors" in d.reasons[0]


def test_first_release_below_a_floor_is_refused():
    too_many_alarms = decide(_measured((16, 100), None), None, [], 0.02, 0.02)
    assert not too_many_alarms.released and "false alarms" in too_many_alarms.reasons[0]
    blind = decide(_measured((0, 100), None, synthetic=(0.5, 0.5)), None, [], 0.02, 0.02)
    assert not blind.released and "drawn defects" in blind.reasons[0]


def test_a_model_that_flags_nothing_never_passes():
    silent = _measured((0, 100), 0.95, synthetic=(0.9, 0.0))
    assert not decide(silent, None, [], 0.02, 0.02).released
    d = decide(silent, _measured((2, 100), 0.9), ["a"], 0.02, 0.02)
    assert not d.released and "flags (almost) nothing" in d.reasons[0]
    assert decide(
        silent, _measured((2, 100), 0.9), ["a"], 0.02, 0.02, Floors(min_synthetic_recall=0.0)
    ).released


def test_lower_auroc_on_drawn_defects_refuses():
    worse = _measured((0, 10), None, synthetic=(0.7, 0.5))
    d = decide(worse, _measured((0, 10), None, synthetic=(0.9, 0.5)), ["a"], 0.02, 0.05)
    assert not d.released and "drawn defects" in d.reasons[0]


def test_more_false_alarms_refuse():
    d = decide(_measured((3, 10), 0.9), _measured((1, 10), 0.9), ["a"], 0.02, 0.02)
    assert not d.released and "false alarms" in d.reasons[0]


def test_lower_auroc_refuses_within_tolerance_passes():
    assert not decide(_measured((0, 10), 0.8), _measured((0, 10), 0.9), ["a"], 0.02, 0.05).released
    assert decide(_measured((0, 10), 0.86), _measured((0, 10), 0.9), ["a"], 0.02, 0.05).released


def test_dropping_a_served_product_refuses():
    d = decide(_measured((0, 10), 0.9), _measured((0, 10), 0.9, ("a", "b")), ["a", "b"], 0, 0)
    assert not d.released and "['b']" in d.reasons[0]
