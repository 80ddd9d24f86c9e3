"""The latency budget through faults: a broker outage, a worker killed, a hot swap.

`python -m deploy.benchmarks.latency_budget ... --faults` runs these three, evenly
spread over the measured window while the camera keeps sending:

    broker outage   the broker is killed (SIGKILL) and started again after --outage-s;
                    it keeps its records (durable storage), the clients reconnect
    worker killed   the worker gets SIGKILL and is started again at once; its
                    uncommitted frames are judged again by the new process
    hot swap        the same artifact is published as a new release; the worker
                    prepares it beside the live model and swaps between two batches

and reports, for each, what a PLC engineer asks: how many parts went TIMEOUT and
when they were captured, when parts were decided in time again, and (hot swap) the
p99 around the swap against the p99 before it. A part may get TIMEOUT only while
nothing could judge it; a part with no outcome at all is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from deploy.benchmarks.latency_budget import Part

#: The hot swap's p99 is compared over the parts captured this long before the publish.
SWAP_BASELINE_MS = 30_000.0
#: ... and over the parts captured from the publish until this long after the swap.
SWAP_AFTER_MS = 10_000.0


@dataclass
class Fault:
    """One fault on this machine's wall clock (epoch ms).

    began: the fault was caused (kill, publish). ended: what was lost is back (the
    broker answers; the new worker is ready; the new release judged its first part).
    """

    name: str
    began: float
    ended: float | None = None


def decision(part: Part) -> str | None:
    """The part's first outcome at the PLC (OK / NG / TIMEOUT), None when it got none."""
    if not part.outcomes:
        return None
    return min(part.outcomes.items())[1][0]


def fault_report(
    parts: Sequence[Part], faults: Sequence[Fault], deadline_ms: float
) -> list[dict[str, float | int | str | None]]:
    """Per fault: the parts in its span, their TIMEOUTs and lost parts, when parts were in
    time again. A fault's span runs from one deadline before it began (a part captured
    then was still waiting) to the next fault's (or the end)."""
    ordered = sorted(faults, key=lambda f: f.began)
    rows = []
    for i, fault in enumerate(ordered):
        end = ordered[i + 1].began - deadline_ms if i + 1 < len(ordered) else float("inf")
        span = [p for p in parts if fault.began - deadline_ms <= p.captured < end]
        timeouts = [p for p in span if decision(p) == "TIMEOUT"]
        ended = fault.ended if fault.ended is not None else fault.began
        row: dict[str, float | int | str | None] = {
            "fault": fault.name,
            "parts": len(span),
            "timeout": len(timeouts),
            "lost": sum(decision(p) is None for p in span),
            "second_outcomes": sum(len(p.outcomes) > 1 for p in span),
            "fault_s": (ended - fault.began) / 1000,
            # the last part that went TIMEOUT, captured this long after the fault ended
            # (negative: every TIMEOUT was captured while it lasted)
            "last_timeout_after_end_s": (
                (max(p.captured for p in timeouts) - ended) / 1000 if timeouts else None
            ),
        }
        if fault.name == "hot swap":
            row.update(swap_p99s(parts, fault))
        rows.append(row)
    return rows


def swap_p99s(parts: Sequence[Part], swap: Fault) -> dict[str, float | None]:
    """capture -> decision p99 before the publish and from it until shortly after the swap."""
    swapped = swap.ended if swap.ended is not None else swap.began

    def p99(low: float, high: float) -> float | None:
        values = [
            p.times()["capture -> decision"]
            for p in parts
            if low <= p.captured < high and p.verdict is not None and p.stages is not None
        ]
        return float(np.percentile(values, 99)) if values else None

    before = p99(swap.began - SWAP_BASELINE_MS, swap.began)
    around = p99(swap.began, swapped + SWAP_AFTER_MS)
    return {
        "p99_before_ms": before,
        "p99_around_ms": around,
        "p99_ratio": around / before if before and around else None,
    }


def timeline(
    parts: Sequence[Part], bucket_ms: float = 5_000.0
) -> list[dict[str, float | int | None]]:
    """The window in buckets of capture time: parts, TIMEOUTs, parts with no outcome,
    capture -> decision p50 / max and capture -> OPC UA p50, so a reader sees when the line
    was in time again (or whether it slowed down as the run went on)."""
    if not parts:
        return []
    first = min(p.captured for p in parts)
    buckets: dict[int, list[Part]] = {}
    for p in parts:
        buckets.setdefault(int((p.captured - first) // bucket_ms), []).append(p)
    rows = []
    for index in sorted(buckets):
        group = buckets[index]
        waits = [p.times()["capture -> decision"] for p in group if p.times()]
        plc = [
            t["capture -> OPC UA"] for t in (p.times() for p in group) if "capture -> OPC UA" in t
        ]
        rows.append(
            {
                "from_s": index * bucket_ms / 1000,
                "parts": len(group),
                "timeout": sum(decision(p) == "TIMEOUT" for p in group),
                "no_outcome": sum(decision(p) is None for p in group),
                "decision_p50_ms": float(np.median(waits)) if waits else None,
                "decision_max_ms": float(max(waits)) if waits else None,
                "plc_p50_ms": float(np.median(plc)) if plc else None,
            }
        )
    return rows


def plot_timeline(
    parts: Sequence[Part], faults: Sequence[Fault], deadline_ms: float, path, title: str
) -> None:
    """Each part's capture -> decision against its capture time, by its outcome at the PLC,
    with the faults shaded and the deadline drawn: when the line was in time again shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not parts:
        return
    first = min(p.captured for p in parts)
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for outcome, style in (("OK", ("tab:blue", ".")), ("NG", ("tab:orange", ".")),
                           ("TIMEOUT", ("tab:red", "x")), (None, ("black", "s"))):  # fmt: skip
        chosen = [p for p in parts if decision(p) == outcome and p.times()]
        if chosen:
            axes.scatter(
                [(p.captured - first) / 1000 for p in chosen],
                [max(p.times()["capture -> decision"], 1.0) for p in chosen],
                s=6 if outcome != "TIMEOUT" else 10,
                c=style[0],
                marker=style[1],
                label=f"{outcome or 'no outcome'} ({len(chosen)})",
            )
    for fault in faults:
        ended = fault.ended if fault.ended is not None else fault.began
        axes.axvspan((fault.began - first) / 1000, (ended - first) / 1000, color="grey", alpha=0.25)
        axes.text((fault.began - first) / 1000, 0.97, fault.name, fontsize=8, rotation=90,
                  va="top", ha="right", transform=axes.get_xaxis_transform())  # fmt: skip
    axes.axhline(deadline_ms, color="tab:red", linestyle="--", linewidth=1, label="deadline")
    axes.set_yscale("log")
    axes.set_xlabel("captured, s into the window")
    axes.set_ylabel("capture -> decision, ms (log scale)")
    save_figure(figure, axes, path, title, legend="upper left")


def save_figure(figure, axes, path, title: str, legend: str) -> None:
    """The benchmark's figures' common finish: title, grid, legend, written and closed."""
    import matplotlib.pyplot as plt

    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc=legend)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
