"""A line's own threshold from its counts: the split-conformal rank read off the bins, and
what an operator found of flagged parts, honoured both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from model.false_alarms import conformal_promise, conformal_rank
from operations.line_calibration import (
    EVIDENCE_VERSIONS,
    evidence_versions,
    propose,
    read_evidence,
)
from schemas.live_scores import BINS_PER_THRESHOLD, PartFinding, bin_field, score_bin
from schemas.manifest import ModelManifest, ProductThreshold

THRESHOLD = 2.0  # the product's threshold: the bins' unit


class EvidenceControl:
    """The two reads `read_evidence` makes, from dicts."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], dict[str, int]] = {}
        self.found: dict[tuple[str, str, str], list[PartFinding]] = {}

    def judged(self, version: str, scores, ng: bool = False, line: str = "l1") -> None:
        fields = self.counts.setdefault((version, line, "tile"), {})
        for score in scores:
            name = bin_field("ng" if ng else "ok", score_bin(score, THRESHOLD))
            fields[name] = fields.get(name, 0) + 1

    def finding(self, version: str, frame_id: str, score: float, finding: str) -> None:
        self.found.setdefault((version, "l1", "tile"), []).append(
            PartFinding(
                frame_id=frame_id,
                line="l1",
                product="tile",
                model_version=version,
                score=score,
                threshold=THRESHOLD,
                finding=finding,
                who="op",
                when=datetime.now(UTC),
            )
        )

    def score_counts(self, version, line, product):
        return dict(self.counts.get((version, line, product), {}))

    def findings(self, version, line, product):
        return list(self.found.get((version, line, product), []))


def manifest(version: str = "v1", **data) -> ModelManifest:
    return ModelManifest(
        version=version,
        created=datetime.now(UTC),
        image_size=32,
        sha256="0" * 64,
        products={
            "tile": ProductThreshold(
                threshold=THRESHOLD, rule="r", normal_scores=11, target_false_alarm_rate=0.01
            )
        },
        data=data,
    )


def test_the_proposal_is_the_conformal_rank_read_off_the_bins():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.2, 1.8, 999)  # all OK under today's threshold of 2.0
    control = EvidenceControl()
    control.judged("v1", scores)
    evidence = read_evidence(control, manifest(), "l1", "tile")
    proposal = propose(evidence, today=THRESHOLD, target_rate=0.01, min_normals=300)
    k = conformal_rank(999, 0.99)
    kth = np.sort(scores)[k - 1]
    assert proposal.ok and proposal.rank == k and proposal.normals == 999
    # the upper edge of the k-th score's bin: at most one bin above it, never below
    assert kth < proposal.threshold <= kth + THRESHOLD / BINS_PER_THRESHOLD + 1e-12
    assert (scores <= proposal.threshold).sum() >= k
    assert proposal.expected_false_alarm_rate == conformal_promise(999, k)[0] == 0.01
    assert proposal.today_flagged == 0
    assert proposal.entry().rule.startswith("line-calibrated: the bin of the 990th smallest of 999")


def test_too_few_normals_say_how_many_more():
    control = EvidenceControl()
    control.judged("v1", [0.5] * 120)
    proposal = propose(read_evidence(control, manifest(), "l1", "tile"), THRESHOLD, 0.01, 300)
    assert not proposal.ok and proposal.threshold is None
    assert "180 more are needed" in proposal.refusals[0]


def test_unreviewed_ng_parts_are_not_normals_and_a_threshold_rises_only_over_parts_found_fine():
    control = EvidenceControl()
    control.judged("v1", np.linspace(0.1, 1.9, 500))
    control.judged("v1", [2.5] * 40, ng=True)  # flagged, nobody looked
    evidence = read_evidence(control, manifest(), "l1", "tile")
    assert evidence.unreviewed_ng == 40
    before = propose(evidence, THRESHOLD, 0.01, 300)
    assert before.normals == 500 and before.threshold < THRESHOLD
    for i in range(40):
        control.finding("v1", f"f{i}", 2.5, "fine")
    evidence = read_evidence(control, manifest(), "l1", "tile")
    after = propose(evidence, THRESHOLD, 0.01, 300)
    assert evidence.unreviewed_ng == 0 and after.normals == 540
    assert after.today_flagged == 40 and after.today_rate[0] == pytest.approx(40 / 540)
    assert after.threshold > 2.5  # 40 of 540 normals above 2.0: 1 % sits above them


def test_a_confirmed_defect_at_or_below_the_proposal_refuses_it():
    control = EvidenceControl()
    control.judged("v1", np.linspace(0.1, 1.9, 500))
    control.judged("v1", [1.85], ng=True)  # flagged under a threshold of 1.5, and defective
    control.finding("v1", "bad-1", 1.85, "defective")
    proposal = propose(read_evidence(control, manifest(), "l1", "tile"), 1.5, 0.002, 300)
    assert proposal.threshold >= 1.9  # the 500th of 500 normals: their maximum
    assert [f.frame_id for f in proposal.would_pass] == ["bad-1"] and not proposal.ok
    assert "would pass" in proposal.refusals[0]
    with pytest.raises(ValueError):
        proposal.entry()


def test_a_line_threshold_release_continues_its_parents_counts():
    control = EvidenceControl()
    control.judged("v1", [0.5] * 200)
    control.judged("v2", [0.6] * 150)
    control.judged("v1", [0.5] * 99, line="l2")
    child = manifest("v2", **{EVIDENCE_VERSIONS: ["v1"]})
    assert evidence_versions(child) == ("v2", "v1")
    evidence = read_evidence(control, child, "l1", "tile")
    assert evidence.judged == 350 and evidence.versions == ("v2", "v1")
    assert read_evidence(control, manifest("v2"), "l1", "tile").judged == 150


def test_an_unknown_product_has_no_evidence():
    with pytest.raises(ValueError, match="no product"):
        read_evidence(EvidenceControl(), manifest(), "l1", "bolt")
