"""The Kafka contract's names and helpers (`schemas.topics`)."""

import re

import pytest

from schemas import topics


@pytest.mark.parametrize(
    ("topic", "line"),
    [("kenpin.frames.l1", "l1"), ("plant-a.frames.press_3", "press_3")],
)
def test_line_from_topic(topic, line):
    assert topics.line_from_topic(topic) == line


@pytest.mark.parametrize("topic", ["nodots", "kenpin.frames."])
def test_line_from_topic_rejects_topics_without_a_line(topic):
    with pytest.raises(ValueError):
        topics.line_from_topic(topic)


def test_topic_names():
    assert topics.frames_topic("l1") == "kenpin.frames.l1"
    assert topics.verdict_topic("l1") == "kenpin.verdicts.l1"
    assert topics.verdict_topic("l1", "x.v.") == "x.v.l1"


def test_frame_topic_patterns():
    assert topics.FRAMES_TOPIC_PATTERN == r"^kenpin\.frames\..*"
    every_line = re.compile(topics.FRAMES_TOPIC_PATTERN)
    assert every_line.match("kenpin.frames.l1") and not every_line.match("kenpin.verdicts.l1")
    run = re.compile(topics.frames_topic_pattern("r7-"))
    assert run.match("kenpin.frames.r7-l1") and not run.match("kenpin.frames.r8-l1")
    one = re.compile(topics.frames_topic_pattern("l2", exact=True))
    assert one.match("kenpin.frames.l2") and not one.match("kenpin.frames.l21")
