"""A line's own threshold: proposed from the scores its workers judged, applied only as a release.

A release's threshold keeps its promise for parts like the normals it was
calibrated on; a line's parts may look otherwise (another batch, another
light, another camera). The workers count every image score they judge, per
release, line and product (`worker.live_scores`); operators say of flagged
parts whether they were fine or defective (`schemas.live_scores.PartFinding`).
From both, this module proposes the line's threshold by the same split-conformal
rule as the trainer's (`model.false_alarms`), read off the line's own normals:

- the normals are the OK frames and the NG frames an operator found fine; an
  NG frame nobody reviewed is not counted as a normal (it may be a defect), so
  a threshold moves up only as far as the parts operators found fine carry it;
- the threshold is the upper edge of the bin that holds the k-th smallest
  normal score: every normal up to the k-th is below it, so the promised rate
  holds (the bins, 0.1 % of the product's threshold wide, can only lower it);
- every confirmed-defective part that would score at or below it is listed:
  the change would have let that part pass, and the trainer refuses it.

The counts of a release that only changed line thresholds continue its parent's
(`EVIDENCE_VERSIONS`: the same weights judge the same scores), so a line does
not start its count again after each calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.false_alarms import (
    conformal_promise,
    conformal_rank,
    normals_needed,
    ordinal,
    rate_interval,
)
from operations.retrain_queue import RetrainQueue
from planes.control import ControlPlane
from schemas.control import LineThresholdChange
from schemas.live_scores import TOP_BIN, PartFinding, bin_top, parse_bin_field, score_bin
from schemas.manifest import ModelManifest, ProductThreshold

#: `ModelManifest.data` key: earlier releases whose counts this one's continue (same weights).
EVIDENCE_VERSIONS = "evidence_versions"


@dataclass(frozen=True)
class LineEvidence:
    """What one line judged of one product under the serving weights, and what operators found."""

    line: str
    product: str
    versions: tuple[str, ...]  # the releases counted: the serving one first
    product_threshold: float  # the bins' unit
    ok: np.ndarray  # counts per bin, TOP_BIN + 1
    ng: np.ndarray
    findings: tuple[PartFinding, ...]

    @property
    def judged(self) -> int:
        return int(self.ok.sum() + self.ng.sum())

    @property
    def fine(self) -> list[PartFinding]:
        return [f for f in self.findings if f.finding == "fine"]

    @property
    def defective(self) -> list[PartFinding]:
        return [f for f in self.findings if f.finding == "defective"]

    @property
    def unreviewed_ng(self) -> int:
        """NG frames no operator has said anything of (counted as possible defects)."""
        return max(0, int(self.ng.sum()) - len(self.findings))

    def normals(self) -> np.ndarray:
        """Counts per bin of the line's normals: OK frames and NG frames found fine."""
        counts = self.ok.copy()
        for finding in self.fine:
            counts[score_bin(finding.score, self.product_threshold)] += 1
        return counts


@dataclass(frozen=True)
class Proposal:
    """The line's threshold at a target rate, beside today's, with what either would do."""

    evidence: LineEvidence
    target_false_alarm_rate: float
    today: float  # the threshold the line is judged by now
    normals: int
    today_flagged: int  # of the normals, above today's threshold (found fine after all)
    threshold: float | None = None  # None: none proposed (`refusals` says why)
    expected_false_alarm_rate: float | None = None
    false_alarm_interval: tuple[float, float] | None = None
    rank: int | None = None
    would_pass: list[PartFinding] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return self.evidence.line

    @property
    def product(self) -> str:
        return self.evidence.product

    @property
    def ok(self) -> bool:
        """A threshold was proposed and no confirmed defect would pass under it."""
        return self.threshold is not None and not self.refusals

    @property
    def today_rate(self) -> tuple[float, tuple[float, float]]:
        """Today's false-alarm rate measured on the line's normals, with its 95 % interval."""
        rate = self.today_flagged / self.normals if self.normals else 0.0
        return rate, rate_interval(self.today_flagged, self.normals)

    def entry(self) -> ProductThreshold:
        """The proposal as a manifest entry (only when `ok`)."""
        if not self.ok or self.rank is None or self.threshold is None:
            raise ValueError(f"no threshold to release: {'; '.join(self.refusals)}")
        return ProductThreshold(
            threshold=self.threshold,
            rule=f"line-calibrated: the bin of the {ordinal(self.rank)} smallest of "
            f"{self.normals} normals judged on line {self.line} "
            f"(releases {', '.join(self.evidence.versions)})",
            normal_scores=self.normals,
            target_false_alarm_rate=self.target_false_alarm_rate,
            expected_false_alarm_rate=self.expected_false_alarm_rate,
            false_alarm_interval=self.false_alarm_interval,
        )


def evidence_versions(manifest: ModelManifest) -> tuple[str, ...]:
    """The serving release and those whose counts it continues."""
    earlier = manifest.data.get(EVIDENCE_VERSIONS) or []
    return (manifest.version, *[str(v) for v in earlier if v != manifest.version])


def read_evidence(
    control: ControlPlane, manifest: ModelManifest, line: str, product: str
) -> LineEvidence:
    """The counts and findings of `line` and `product` under the serving weights."""
    if product not in manifest.products:
        raise ValueError(f"release {manifest.version} has no product {product!r}")
    ok = np.zeros(TOP_BIN + 1, np.int64)
    ng = np.zeros(TOP_BIN + 1, np.int64)
    findings: dict[str, PartFinding] = {}
    versions = evidence_versions(manifest)
    for version in reversed(versions):  # oldest first: a later finding of a frame counts
        for name, count in control.score_counts(version, line, product).items():
            parsed = parse_bin_field(name)
            if parsed is not None:
                (ok if parsed[0] == "ok" else ng)[parsed[1]] += count
        for finding in control.findings(version, line, product):
            findings[finding.frame_id] = finding
    return LineEvidence(
        line=line,
        product=product,
        versions=versions,
        product_threshold=manifest.products[product].threshold,
        ok=ok,
        ng=ng,
        findings=tuple(sorted(findings.values(), key=lambda f: f.when)),
    )


def propose(evidence: LineEvidence, today: float, target_rate: float, min_normals: int) -> Proposal:
    """The split-conformal threshold of the line's normals at `target_rate` false alarms."""
    if not 0 < target_rate < 1:
        raise ValueError(f"a target false-alarm rate is between 0 and 1, not {target_rate}")
    counts = evidence.normals()
    n = int(counts.sum())
    base = evidence.product_threshold
    # flagged today: the parts found fine that score above it (exact), and OK frames an
    # earlier threshold judged that lie in bins wholly above it
    flagged = sum(f.score > today for f in evidence.fine)
    flagged += int(evidence.ok[min(TOP_BIN + 1, score_bin(today, base) + 1) :].sum())
    proposal = Proposal(evidence, target_rate, today, n, flagged)
    needed = max(min_normals, normals_needed(target_rate))
    if n < needed:
        proposal.refusals.append(
            f"{n} normals judged on line {evidence.line} under the serving weights: "
            f"{needed - n} more are needed for a {100 * target_rate:.3g} % target"
        )
        return proposal
    k = conformal_rank(n, 1 - target_rate)
    index = int(np.searchsorted(np.cumsum(counts), k))
    if index >= TOP_BIN:
        proposal.refusals.append(
            f"the {ordinal(k)} smallest normal scores three times the product's threshold or "
            "more: the line's parts are unlike the model's normals, retrain instead"
        )
        return proposal
    threshold = bin_top(index, base)
    expected, interval = conformal_promise(n, k)
    would_pass = [f for f in evidence.defective if f.score <= threshold]
    refusals = []
    if would_pass:
        refusals.append(
            f"{len(would_pass)} part(s) an operator confirmed defective score at or below "
            f"{threshold:.6g} and would pass"
        )
    return Proposal(
        evidence,
        target_rate,
        today,
        n,
        proposal.today_flagged,
        threshold=threshold,
        expected_false_alarm_rate=expected,
        false_alarm_interval=interval,
        rank=k,
        would_pass=would_pass,
        refusals=refusals,
    )


def line_proposal(
    control: ControlPlane,
    manifest: ModelManifest,
    line: str,
    product: str,
    target_rate: float | None,
    min_normals: int,
) -> Proposal:
    """`propose` on the evidence in Redis; the target defaults to the product's own."""
    entry = manifest.threshold_entry(product, line)
    assert entry is not None  # read_evidence refuses an unknown product first
    evidence = read_evidence(control, manifest, line, product)
    target = target_rate or manifest.products[product].target_false_alarm_rate or 0.01
    return propose(evidence, entry.threshold, target, min_normals)


def request_line_threshold(
    queue: RetrainQueue,
    manifest: ModelManifest,
    line: str,
    product: str,
    target_rate: float,
    who: str,
) -> str:
    """Ask the trainers for a release that gives `line` its own threshold of `product`."""
    change = LineThresholdChange(
        line=line,
        product=product,
        target_false_alarm_rate=target_rate,
        base_version=manifest.version,
    )
    return queue.request(
        f"line {line}: own threshold for {product} at {100 * target_rate:.3g} % false alarms",
        who,
        line_threshold=change,
    )
