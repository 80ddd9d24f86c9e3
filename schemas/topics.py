"""The Kafka contract: which topics kenpin reads and writes, and how they are named.

An integrator (a camera gateway, the PLC side, a MES bridge) needs nothing else
to find kenpin's data on the broker:

- `kenpin.frames.<line>`: frames of one production line, written by its cameras
  (value: the image bytes; headers: `schemas.frames.FrameHeaders`; key: the
  camera id). Workers subscribe by pattern (`FRAMES_TOPIC_PATTERN`), so a new
  line's topic is judged without restarting anything.
- `kenpin.parts.<line>`: one record per frame with the frame's headers and no value,
  written by the camera beside the frame: the part announced. The PLC bridge learns
  of parts from it, so it never fetches image bytes (it reads a line's frames only
  while the line has no parts topic). Once a line has one, every camera of the line
  must announce there: a part the bridge has not heard of gets no TIMEOUT.
- `kenpin.verdicts.<line>`: one `schemas.verdicts.Verdict` (JSON) per judged
  frame, keyed by camera id, so one camera's verdicts stay in order.
- `kenpin.deadletter`: one `schemas.deadletters.DeadLetter` (JSON) per frame
  that could not be judged, keyed like the original record.
- MQTT `kenpin/<line>/verdict`: what the PLC bridge (`kenpin-bridge`) publishes
  per part when a plant uses an MQTT broker (docs/plc-integration.md).

Line names have no dots (`schemas.common.Name`), so the line is whatever follows
the last dot of a topic. Workers share the consumer group `kenpin-workers`:
its committed offsets are how far each line has been judged.

Deployments may override the prefixes, the pattern and the group (worker
settings); these are the defaults every kenpin process and integrator assumes.
"""

from __future__ import annotations

import re

FRAMES_TOPIC_PREFIX = "kenpin.frames."
PARTS_TOPIC_PREFIX = "kenpin.parts."
VERDICTS_TOPIC_PREFIX = "kenpin.verdicts."
DEADLETTER_TOPIC = "kenpin.deadletter"
#: The Kafka consumer group of the workers (one group: each frame is judged once).
CONSUMER_GROUP = "kenpin-workers"


def frames_topic(line: str, prefix: str = FRAMES_TOPIC_PREFIX) -> str:
    """`l1` -> `kenpin.frames.l1`."""
    return f"{prefix}{line}"


def parts_topic(line: str, prefix: str = PARTS_TOPIC_PREFIX) -> str:
    """`l1` -> `kenpin.parts.l1`."""
    return f"{prefix}{line}"


def verdict_topic(line: str, prefix: str = VERDICTS_TOPIC_PREFIX) -> str:
    """`l1` -> `kenpin.verdicts.l1`."""
    return f"{prefix}{line}"


def line_from_topic(topic: str) -> str:
    """`kenpin.frames.l1` -> `l1`; ValueError when the topic has no line part."""
    _, dot, line = topic.rpartition(".")
    if not dot or not line:
        raise ValueError(f"topic {topic!r} does not end in '.<line>'")
    return line


def frames_topic_pattern(line_prefix: str = "", *, exact: bool = False) -> str:
    """Regex of the frame topics whose line starts with `line_prefix` (all lines by default).

    `exact=True`: only the line named `line_prefix` itself.
    """
    return f"^{re.escape(frames_topic(line_prefix))}{'$' if exact else '.*'}"


#: What a worker subscribes to by default: every line's frames.
FRAMES_TOPIC_PATTERN = frames_topic_pattern()


def verdicts_topic_pattern(line_prefix: str = "", *, exact: bool = False) -> str:
    """Regex of the verdict topics whose line starts with `line_prefix` (all lines by default)."""
    return f"^{re.escape(verdict_topic(line_prefix))}{'$' if exact else '.*'}"


#: What the PLC bridge reads besides the frames: every line's verdicts.
VERDICTS_TOPIC_PATTERN = verdicts_topic_pattern()


def parts_topic_pattern(line_prefix: str = "", *, exact: bool = False) -> str:
    """Regex of the parts topics whose line starts with `line_prefix` (all lines by default)."""
    return f"^{re.escape(parts_topic(line_prefix))}{'$' if exact else '.*'}"


#: Where the PLC bridge hears of parts without their images: every line's announcements.
PARTS_TOPIC_PATTERN = parts_topic_pattern()

#: MQTT, the PLC bridge's optional output: `kenpin/<line>/verdict`, the last outcome retained.
MQTT_TOPIC_PREFIX = "kenpin/"


def mqtt_verdict_topic(line: str, prefix: str = MQTT_TOPIC_PREFIX) -> str:
    """`l1` -> `kenpin/l1/verdict`."""
    return f"{prefix}{line}/verdict"
