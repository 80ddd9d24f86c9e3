"""The Redis contract: every key and channel kenpin uses on the control plane.

Redis carries what every process must agree on but that is too small or too
urgent for Kafka or S3. Values are JSON of the models named below.

Releases (written by the trainer or an operator, read by every worker):

- `kenpin:model:current` (string): the `schemas.manifest.ModelManifest` of the
  release every worker should serve. The truth: workers read it periodically.
- `kenpin:model:releases` (pub/sub channel): the same manifest, published when
  it becomes current, so the swap is prompt. Fire-and-forget: a reconnecting
  worker misses it, and reads the current key instead.
- `kenpin:model:last_good` (string): the manifest of the release a worker last
  verified and served; what a starting worker falls back to when the current
  release is refused.
- `kenpin:model:history` (list, newest first): versions made current, pushed on
  publish; rollback goes back through it and a starting worker falls back to it.

Workers:

- `kenpin:worker:<worker id>` (string with a TTL): a worker's
  `schemas.control.WorkerHeartbeat`; a dead worker's key expires by itself.

Retraining (the trainer service and its operators):

- `kenpin:retrain` (stream): one `schemas.control.RetrainRequest` per entry,
  field `request`; trainers read it as the consumer group `kenpin-trainers`.
- `kenpin:retrain:outcome:<request id>` (string with a TTL): the request's
  `schemas.control.RetrainOutcome`, updated at every stage.
- `kenpin:trainer:lock` (string with a TTL): one training at a time; the value
  names the trainer holding it.
- `kenpin:trainer:schedule:<slot>` (string with a TTL): marks a scheduled
  request as made for that interval slot, so several trainers make it once.

The line's own evidence for its thresholds (`schemas.live_scores`):

- `kenpin:scores:<version>:<line>:<product>` (hash with a TTL): counts of the
  image scores workers judged under that release, field `ok:<bin>` / `ng:<bin>`;
  workers add to it (HINCRBY), so every worker of a line counts into one.
- `kenpin:findings:<version>:<line>:<product>` (hash with a TTL): frame id ->
  `schemas.live_scores.PartFinding`, operators' findings on flagged parts.

Every key and the channel may be namespaced by a prefix (the `control_prefix`
setting: several plants, or tests, sharing one Redis): the prefix is put in
front of the names above as it is, e.g. `plant2:` gives `plant2:kenpin:model:current`.
"""

from __future__ import annotations

CURRENT_KEY = "kenpin:model:current"
RELEASES_CHANNEL = "kenpin:model:releases"
LAST_GOOD_KEY = "kenpin:model:last_good"
HISTORY_KEY = "kenpin:model:history"
HEARTBEAT_PREFIX = "kenpin:worker:"

RETRAIN_STREAM = "kenpin:retrain"
#: The consumer group of the trainers on `RETRAIN_STREAM`.
TRAINER_GROUP = "kenpin-trainers"
OUTCOME_PREFIX = "kenpin:retrain:outcome:"
LOCK_KEY = "kenpin:trainer:lock"
SCHEDULE_PREFIX = "kenpin:trainer:schedule:"

LIVE_SCORES_PREFIX = "kenpin:scores:"
FINDINGS_PREFIX = "kenpin:findings:"


def heartbeat_key(worker_id: str) -> str:
    """`kenpin:worker:<worker id>`."""
    return f"{HEARTBEAT_PREFIX}{worker_id}"


def outcome_key(request_id: str) -> str:
    """`kenpin:retrain:outcome:<request id>`."""
    return f"{OUTCOME_PREFIX}{request_id}"


def schedule_key(slot: str) -> str:
    """`kenpin:trainer:schedule:<slot>`."""
    return f"{SCHEDULE_PREFIX}{slot}"


def live_scores_key(version: str, line: str, product: str) -> str:
    """`kenpin:scores:<version>:<line>:<product>`."""
    return f"{LIVE_SCORES_PREFIX}{version}:{line}:{product}"


def findings_key(version: str, line: str, product: str) -> str:
    """`kenpin:findings:<version>:<line>:<product>`."""
    return f"{FINDINGS_PREFIX}{version}:{line}:{product}"
