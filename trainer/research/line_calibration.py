"""A line's own threshold, measured: proposed from half of a product's good test parts,
judged on the other half and on every defective part.

    python -m trainer.research.line_calibration --model M --data DATA [--out FIGURE]
        [--splits 200] [--targets 0.02 0.05] [--live-fraction 0.5]

The test set's good parts stand in for a line's normals: the model never saw them, and
they are not the held-out normals its shipped threshold was calibrated on. Each split
(`--splits`, random halves; `--live-fraction` for another share) gives the line the first
part as its judged normals (every flagged one reviewed and found fine), counted in the
workers' bins; the proposal is
`operations.line_calibration.propose`, the code the console shows and the trainer
releases. The other half measures the false alarms the proposal promised; the defective
parts its recall. The shipped threshold is measured on the same halves beside it.
Printed per product and target: the promise, the mean measured rate with the 2.5-97.5 %
range over splits, the mean recall (per defect too); the figure shows the measured rates
against the promise.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.loading import load_network
from operations.line_calibration import LineEvidence, propose
from schemas.live_scores import TOP_BIN, PartFinding, score_bin
from trainer.learning.data import discover, read_images
from trainer.research.levers import scores

TARGETS = (0.02, 0.05)


def evidence_of(
    product: str, version: str, product_threshold: float, today: float, live: np.ndarray
) -> LineEvidence:
    """What the workers would have counted of `live` under `today`, every NG found fine."""
    ok = np.zeros(TOP_BIN + 1, np.int64)
    ng = np.zeros(TOP_BIN + 1, np.int64)
    fine = []
    for i, score in enumerate(live):
        index = score_bin(float(score), product_threshold)
        if score > today:
            ng[index] += 1
            fine.append(
                PartFinding(
                    frame_id=f"live-{i}",
                    line="line",
                    product=product,
                    model_version=version,
                    score=float(score),
                    threshold=today,
                    finding="fine",
                    who="study",
                    when=datetime.now(UTC),
                )
            )
        else:
            ok[index] += 1
    return LineEvidence("line", product, (version,), product_threshold, ok, ng, tuple(fine))


def measure(
    model_dir: Path,
    data_dir: Path,
    splits: int,
    targets: tuple[float, ...],
    out: Path | None,
    live_fraction: float = 0.5,
) -> None:
    started = time.time()
    network, manifest = load_network(model_dir)
    network.eval()
    figures = {}
    for product in discover(data_dir):
        entry = manifest.products.get(product.name)
        if entry is None:
            continue
        good = [t.path for t in product.test if not t.anomalous]
        bad = [t for t in product.test if t.anomalous]
        good_scores = scores(network, read_images(good, manifest.image_size))
        bad_scores = scores(network, read_images([t.path for t in bad], manifest.image_size))
        defects = np.array([t.defect for t in bad])
        half = int(round(len(good) * live_fraction))
        print(
            f"\n{product.name}: {len(good)} good test parts ({half} judged on the line, "
            f"{len(good) - half} unseen per split), {len(bad)} defective; {splits} splits "
            f"({time.time() - started:.0f} s)",
            flush=True,
        )
        rng = np.random.default_rng(0)
        rows: dict[str, dict[str, list]] = {}
        for _ in range(splits):
            order = rng.permutation(len(good))
            live, unseen = good_scores[order[:half]], good_scores[order[half:]]
            evidence = evidence_of(
                product.name, manifest.version, entry.threshold, entry.threshold, live
            )
            candidates = {"shipped": (entry.threshold, entry.expected_false_alarm_rate)}
            for target in targets:
                proposal = propose(evidence, entry.threshold, target, min_normals=1)
                if proposal.threshold is not None:
                    candidates[f"line, target {100 * target:g} %"] = (
                        proposal.threshold,
                        proposal.expected_false_alarm_rate,
                    )
            for name, (threshold, expected) in candidates.items():
                row = rows.setdefault(name, {"far": [], "recall": [], "expected": [], "by": []})
                row["far"].append(float((unseen > threshold).mean()))
                row["recall"].append(float((bad_scores > threshold).mean()))
                row["expected"].append(expected)
                row["by"].append(
                    {
                        d: float((bad_scores[defects == d] > threshold).mean())
                        for d in sorted(set(defects))
                    }
                )
        print(
            "| threshold | promised false alarms | measured on unseen good parts: mean "
            "(2.5–97.5 %) | recall | per defect |"
        )
        print("|---|---|---|---|---|")
        for name, row in rows.items():
            far = np.array(row["far"])
            low, high = np.percentile(far, [2.5, 97.5])
            expected = row["expected"][0]
            promised = (
                "not stated"
                if expected is None
                else f"{100 * float(np.mean(row['expected'])):.2f} %"
            )
            per = ", ".join(
                f"{d} {100 * np.mean([b[d] for b in row['by']]):.0f}" for d in row["by"][0]
            )
            print(
                f"| {name} | {promised} | {100 * far.mean():.2f} % "
                f"({100 * low:.1f}–{100 * high:.1f} %) "
                f"| {100 * np.mean(row['recall']):.1f} % | {per} |",
                flush=True,
            )
        if len(rows) > 1:  # a line proposal was made: worth a picture
            figures[product.name] = rows
    if out is not None and figures:
        _figure(figures, out)
        print(f"\nfigure: {out}")


def _figure(figures: dict[str, dict[str, dict[str, list]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figures), figsize=(6 * len(figures), 3.6), squeeze=False)
    for ax, (product, rows) in zip(axes[0], figures.items(), strict=True):
        for (name, row), colour in zip(
            rows.items(), ("#66707a", "#1b7f3b", "#1f5fa8"), strict=False
        ):
            far = 100 * np.array(row["far"])
            ax.hist(
                far,
                bins=np.arange(0, max(12.0, far.max() + 1), 0.5),
                alpha=0.55,
                color=colour,
                label=name,
            )
            if row["expected"][0] is not None:
                ax.axvline(100 * float(np.mean(row["expected"])), color=colour, ls="--")
        ax.set_title(f"{product}: false alarms on unseen good parts")
        ax.set_xlabel("measured false alarms (%) per split; dashed: promised")
        ax.set_ylabel("splits")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.research.line_calibration", description=__doc__
    )
    parser.add_argument("--model", type=Path, required=True, help="a trained release's folder")
    parser.add_argument("--data", type=Path, required=True, help="data in MVTec layout")
    parser.add_argument("--splits", type=int, default=200, help="random halves to average over")
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument("--out", type=Path, default=None, help="a PNG of the measured rates")
    parser.add_argument(
        "--live-fraction", type=float, default=0.5, help="the good parts the line judges"
    )
    args = parser.parse_args(argv)
    measure(args.model, args.data, args.splits, tuple(args.targets), args.out, args.live_fraction)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
