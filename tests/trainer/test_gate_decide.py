"""The gate's decision on measured candidate and current release."""

from trainer.gate import decide


def _measured(far: tuple[int, int], auroc: float | None, products=("a",)) -> dict:
    entry = {"normals": far[1], "false_alarms": far[0]}
    if auroc is not None:
        entry["image_auroc"] = auroc
    return {"products": {p: dict(entry) for p in products}}


def test_first_release_passes_without_comparison():
    assert decide(_measured((0, 10), 0.9), None, [], 0.02, 0.02).released


def test_more_false_alarms_refuse():
    d = decide(_measured((3, 10), 0.9), _measured((1, 10), 0.9), ["a"], 0.02, 0.02)
    assert not d.released and "false alarms" in d.reasons[0]


def test_lower_auroc_refuses_within_tolerance_passes():
    assert not decide(_measured((0, 10), 0.8), _measured((0, 10), 0.9), ["a"], 0.02, 0.05).released
    assert decide(_measured((0, 10), 0.86), _measured((0, 10), 0.9), ["a"], 0.02, 0.05).released


def test_dropping_a_served_product_refuses():
    d = decide(_measured((0, 10), 0.9), _measured((0, 10), 0.9, ("a", "b")), ["a", "b"], 0, 0)
    assert not d.released and "['b']" in d.reasons[0]
