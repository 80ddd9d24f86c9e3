"""Connecting to the plant: the Redis and S3 clients every operation works with.

`kenpin-trainer`'s commands, the retrain service and the console each read their
own settings and call `connect` with them; it needs only the planes' settings
(`OperationsSettings`), never the training recipe, so a bad training variable
cannot stop the console.
"""

from __future__ import annotations

from dataclasses import dataclass

from operations.retrain_queue import RetrainQueue
from operations.settings import OperationsSettings
from planes.control import ControlAccessDenied, ControlPlane
from planes.logs import configure_logging
from planes.storage import ObjectStore, StoreAccessDenied

#: Credentials or a certificate Redis or S3 refused: an operator's mistake, said in one line.
AccessDenied = (ControlAccessDenied, StoreAccessDenied)


@dataclass
class Plant:
    """The control plane (Redis), the bucket (S3), and the retrain queue on that Redis."""

    control: ControlPlane
    store: ObjectStore
    queue: RetrainQueue


def connect(settings: OperationsSettings) -> Plant:
    """Logging configured by `settings`, both clients made and their access checked.

    Raises one of `AccessDenied` when Redis or S3 refuses the credentials or the
    certificate; a plane that does not answer yet is not an error here (the
    callers retry, or report it per request).
    """
    configure_logging(settings.log_format, settings.log_level)
    control = ControlPlane.from_settings(settings)
    store = ObjectStore.from_settings(settings)
    control.check_access()
    store.check_access()
    return Plant(control, store, RetrainQueue(control, settings.outcome_ttl_s))
