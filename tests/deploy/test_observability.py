"""deploy/observability: the alert rules and the Grafana dashboard ask for metrics that exist.

promtool is not on PyPI, so each query is parsed with promql-parser (PromQL's grammar) and
the rule file's structure is checked as Prometheus loads it. Every metric a query reads
must be exported: kenpin's own are derived from the worker's and the trainer's metric
classes (a renamed metric or a missing label fails here), the few from other programs are
listed with their source, and recording rules count once the rule file defines them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from schemas.topics import CONSUMER_GROUP, frames_topic, verdict_topic
from tests.deploy.deploy_checks import DEPLOY
from trainer.service.telemetry import TrainerMetrics
from worker.metrics import WorkerMetrics

OBSERVABILITY = DEPLOY / "observability"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "kenpin.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

#: Series of other programs the queries read, with their labels.
EXTERNAL_SERIES = {
    # kafka_exporter (danielqsj/kafka-exporter, deploy/compose): the consumer group's lag
    "kafka_consumergroup_lag": {"consumergroup", "topic", "partition"},
    "kafka_topic_partition_current_offset": {"topic", "partition"},
    # Prometheus itself, for every scrape target
    "up": set(),
}
#: Labels Prometheus puts on every scraped series.
TARGET_LABELS = {"job", "instance"}
#: Grafana's variables, replaced by a value of their kind before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$line": ".*"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
#: What the issue asks the dashboard to show, by the series that shows it.
DASHBOARD_MUST_SHOW = {
    "kenpin_verdicts_total",
    "kenpin_deadletters_total",
    "kenpin_frame_latency_seconds_bucket",
    "kenpin_frame_stage_seconds_bucket",
    "kenpin_inference_seconds_bucket",
    "kafka_consumergroup_lag",
    "kenpin_heatmap_backlog",
    "kenpin_s3_errors_total",
    "kenpin_kafka_errors_total",
    "kenpin_trainer_queue_depth",
    "kenpin_trainer_last_outcome",
    "kenpin_trainer_stage_seconds_sum",
}
ALERTS_REQUIRED = {
    "KenpinNgRateJump",
    "KenpinConsumerLagGrowing",
    "KenpinNoVerdicts",
    "KenpinReleaseRefused",
    "KenpinHeatmapBacklogGrowing",
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, of every metric the worker and the trainer export."""
    series: dict[str, set[str]] = {}
    worker = WorkerMetrics()
    worker.set_model_version("v1")  # an Info's labels are the keys of its value: set one
    for holder in (worker, TrainerMetrics()):
        for metric in vars(holder).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            # prometheus_client keeps a metric's full name and label names on the wrapper
            name, kind, labels = metric._name, metric._type, set(metric._labelnames)
            if kind == "info":
                labels |= {k for m in metric.collect() for s in m.samples for k in s.labels}
            for suffix in _SUFFIXES[kind]:
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


@dataclass
class Query:
    """What one PromQL expression reads and which labels it names."""

    selectors: list[tuple[str, dict[str, tuple[str, str]]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    made_labels: set[str] = field(default_factory=set)


def parse(expr: str) -> Query:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        pytest.fail(f"not PromQL ({exc}): {expr}")
    query = Query()

    def visit(node: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            matchers = {m.name: (str(m.op), m.value) for m in node.matchers.matchers}
            query.selectors.append((node.name, matchers))
        elif kind == "AggregateExpr" and node.modifier is not None:
            query.grouping |= set(node.modifier.labels)
        elif kind == "BinaryExpr" and node.modifier is not None and node.modifier.matching:
            query.grouping |= set(node.modifier.matching.labels)
        elif kind == "Call" and node.func.name == "label_replace":
            query.made_labels.add(node.args[1].val)

    promql_parser.walk(tree, visit)
    return query


def check_query(expr: str, known: dict[str, set[str]], where: str) -> Query:
    """Every series the query reads exists; every label it names exists on what it reads."""
    query = parse(expr)
    assert query.selectors, f"{where}: reads no series: {expr}"
    labels = set(TARGET_LABELS) | query.made_labels
    for name, matchers in query.selectors:
        assert name in known, f"{where}: {name} is exported by nothing kenpin runs"
        unknown = set(matchers) - known[name] - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no labels {sorted(unknown)}"
        labels |= known[name]
    missing = query.grouping - labels
    assert not missing, f"{where}: groups by labels its series lack: {sorted(missing)}"
    return query


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return yaml.safe_load(ALERTS.read_text())


@pytest.fixture(scope="module")
def known(rules) -> dict[str, set[str]]:
    """Exported series, external ones, and the recording rules (with the labels they keep)."""
    series = exported_series() | EXTERNAL_SERIES
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                query = check_query(rule["expr"], series, rule["record"])
                series[rule["record"]] = query.grouping | query.made_labels
    return series


def test_rule_file_has_the_structure_prometheus_loads(rules):
    names = [group["name"] for group in rules["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    alerts = set()
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], f"{group['name']} is empty"
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}
                assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["record"])
                continue
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", rule["alert"])
            assert rule["alert"] not in alerts, f"{rule['alert']} twice"
            alerts.add(rule["alert"])
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
    assert alerts >= ALERTS_REQUIRED, sorted(ALERTS_REQUIRED - alerts)


def test_rule_queries_read_exported_series(rules, known):
    """Also: an annotation names only labels the alert's series keep (else it renders empty)."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            query = check_query(rule["expr"], known, rule.get("alert") or rule["record"])
            if "alert" not in rule:
                continue
            if query.grouping:  # aggregated: what `by`/`on` keeps
                kept = query.grouping | query.made_labels
            else:
                kept = set(TARGET_LABELS).union(*(known[name] for name, _ in query.selectors))
            for text in rule["annotations"].values():
                for label in re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text):
                    assert label in kept, f"{rule['alert']}: its series do not keep {label}"


def test_queries_use_the_contracts_group_and_topics(rules):
    """The consumer group and the frame-topic regex are the ones kenpin uses."""
    texts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    texts += [target["expr"] for panel in panels for target in panel.get("targets", [])]
    seen_group = seen_topic = False
    for text in texts:
        for _name, matchers in parse(text).selectors:
            if "consumergroup" in matchers:
                assert matchers["consumergroup"][1] == CONSUMER_GROUP
                seen_group = True
            if "topic" in matchers and matchers["topic"][0] == "MatchOp.Re":
                regex = re.compile(matchers["topic"][1])
                assert regex.fullmatch(frames_topic("line1"))
                assert not regex.fullmatch(verdict_topic("line1"))
                seen_topic = True
    assert seen_group and seen_topic


def test_dashboard_panels_read_exported_series(known):
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    read = set()
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            query = check_query(target["expr"], known, panel["title"])
            read |= {name for name, _ in query.selectors}
    assert read >= DASHBOARD_MUST_SHOW, sorted(DASHBOARD_MUST_SHOW - read)
    (line,) = [v for v in dashboard["templating"]["list"] if v["name"] == "line"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", line["query"]["query"])
    assert match and match.group(2) in known[match.group(1)]


def test_prometheus_jobs_are_the_ones_rules_name(rules):
    """`up{job=...}` in the rules names a job of the compose and the Kubernetes scrape configs."""
    jobs_named = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            for _name, matchers in parse(rule["expr"]).selectors:
                if "job" in matchers:
                    jobs_named.add(matchers["job"][1])
    assert jobs_named
    for config in ("prometheus.yml", "kubernetes-scrape.yml"):
        scrape = yaml.safe_load((OBSERVABILITY / "prometheus" / config).read_text())
        jobs = {job["job_name"] for job in scrape["scrape_configs"]}
        assert jobs_named <= jobs, (config, sorted(jobs_named - jobs))
