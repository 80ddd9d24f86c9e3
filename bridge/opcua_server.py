"""The OPC UA server a PLC reads: one object per line, its last outcome, counters and a sequence.

Address space (namespace `opcua_namespace_uri`, index 2; string node ids, stable
across restarts and versions, so a PLC program can name them):

    Objects/kenpin                       ns=2;s=kenpin
      Bridge/Heartbeat  UInt32           ns=2;s=kenpin.Bridge.Heartbeat   +1 every second
      Bridge/Partitions UInt32           ns=2;s=kenpin.Bridge.Partitions  Kafka partitions read
      <line>/                            ns=2;s=kenpin.<line>
        Sequence, LastVerdict, Pass, PartId, CaptureSequence, FrameId, ...
                                         ns=2;s=kenpin.<line>.<Variable>

The variables of one outcome are written in one go, `Sequence` last: a client that
sees `Sequence` change reads a consistent set of the others (and `Json` holds the
whole outcome in one value). Every variable is read-only for clients.

Security: Basic256Sha256 with Sign & Encrypt on the certificate and key from the
settings; an endpoint without security only when asked for. Clients log in with
the configured user and password, checked here (constant-time); anonymous clients
are refused unless allowed.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager

from bridge.deadlines import UINT32_WRAP, LineState
from bridge.outcome import Outcome
from bridge.settings import BridgeSettings
from planes.logs import get_logger
from schemas.plc import OPCUA_BRIDGE_OBJECT, OPCUA_ROOT, opcua_node_name

log = get_logger(__name__)

V = ua.VariantType
#: Outcomes kept per line for PLCs that poll: several parts may be decided between two reads.
RECENT = 16

#: Variable -> (OPC UA type, initial value). The order is the write order; Sequence is last.
LINE_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "LastVerdict": (V.String, ""),  # OK / NG / TIMEOUT / REJECTED_INPUT; "" before the first
    "Pass": (V.Boolean, False),  # True for OK only: what a sorting gate needs
    "PartId": (V.String, ""),
    "CaptureSequence": (V.Int64, -1),  # -1: the camera sent none
    "FrameId": (V.String, ""),
    "Camera": (V.String, ""),
    "Product": (V.String, ""),
    "Score": (V.Double, math.nan),  # NaN unless OK / NG
    "Threshold": (V.Double, math.nan),
    "ModelVersion": (V.String, ""),
    "HeatmapKey": (V.String, ""),
    "Reason": (V.String, ""),  # REJECTED_INPUT: dead-letter code; TIMEOUT: "deadline"
    "WaitedMs": (V.Double, math.nan),  # frame seen -> this outcome, on the bridge's clock
    "DeadlineMs": (V.Double, math.nan),
    "Json": (V.String, ""),  # the whole outcome, one value (what MQTT carries)
    "OkCount": (V.UInt32, 0),
    "NgCount": (V.UInt32, 0),
    "TimeoutCount": (V.UInt32, 0),
    "RejectedCount": (V.UInt32, 0),
    "LateCount": (V.UInt32, 0),  # verdicts after their part's TIMEOUT (not published)
    "DuplicateCount": (V.UInt32, 0),  # replays of a decided part (not published)
    "StaleCount": (V.UInt32, 0),  # parts captured a deadline before the bridge started
    "ClockAheadCount": (V.UInt32, 0),  # capture times ahead of the bridge's clock
    "UnseenCount": (V.UInt32, 0),  # verdicts of parts never read: no TIMEOUT guarded them
    "FrameLagMs": (V.Double, math.nan),  # capture -> the bridge reading the frame, latest
    # the last RECENT outcomes, newest first (index 0 = this Sequence), for a PLC that polls
    "RecentSequence": (V.UInt32, [0] * RECENT),
    "RecentPartId": (V.String, [""] * RECENT),
    "RecentVerdict": (V.String, [""] * RECENT),
    "Sequence": (V.UInt32, 0),  # +1 per outcome, 1 .. 2**32-1; 0: none since start
}


def node_id(namespace: int, *path: str) -> ua.NodeId:
    """`node_id(2, "l1", "Sequence")` -> ns=2;s=kenpin.l1.Sequence."""
    return ua.NodeId(opcua_node_name(*path), namespace)


def outcome_values(outcome: Outcome) -> dict[str, Any]:
    """The per-outcome variables' values ("" / NaN / -1 where the outcome has none)."""

    def text(value: str | None) -> str:
        return value or ""

    def number(value: float | None) -> float:
        return math.nan if value is None else value

    return {
        "LastVerdict": outcome.verdict,
        "Pass": outcome.passes,
        "PartId": text(outcome.part_id),
        "CaptureSequence": -1 if outcome.capture_sequence is None else outcome.capture_sequence,
        "FrameId": text(outcome.frame_id),
        "Camera": text(outcome.camera),
        "Product": text(outcome.product),
        "Score": number(outcome.score),
        "Threshold": number(outcome.threshold),
        "ModelVersion": text(outcome.model_version),
        "HeatmapKey": text(outcome.heatmap_key),
        "Reason": text(outcome.reason),
        "WaitedMs": number(outcome.waited_ms),
        "DeadlineMs": outcome.deadline_ms,
        "Json": outcome.to_json().decode(),
    }


def recent_values(recent: Iterable[Outcome]) -> dict[str, list]:
    """The ring of recent outcomes (oldest first in `recent`) as three arrays, newest first."""
    newest = list(reversed(list(recent)))[:RECENT]
    pad = RECENT - len(newest)
    return {
        "RecentSequence": [o.sequence for o in newest] + [0] * pad,
        "RecentPartId": [o.part_id or "" for o in newest] + [""] * pad,
        "RecentVerdict": [o.verdict for o in newest] + [""] * pad,
    }


def counter_values(state: LineState) -> dict[str, Any]:
    """The line's counters and its frame lag (NaN until a frame with a capture time is read)."""
    return {
        "FrameLagMs": math.nan if state.frame_lag_ms is None else state.frame_lag_ms,
        "OkCount": state.ok,
        "NgCount": state.ng,
        "TimeoutCount": state.timeout,
        "RejectedCount": state.rejected,
        "LateCount": state.late,
        "DuplicateCount": state.duplicate,
        "StaleCount": state.stale,
        "ClockAheadCount": state.clock_ahead,
        "UnseenCount": state.unseen,
    }


class PasswordUsers(UserManager):
    """One user name and password (from the settings); anonymous only when allowed."""

    def __init__(self, user: str, password: str, allow_anonymous: bool) -> None:
        self.user = user.encode()
        self.password = password.encode()
        self.allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if not self.password:
            return None
        # both compared whatever the first says: the time taken tells nothing
        name_ok = hmac.compare_digest(username.encode(), self.user)
        password_ok = hmac.compare_digest((password or "").encode(), self.password)
        if name_ok and password_ok:
            return User(role=UserRole.User)
        log.warning("opc ua login refused", user=username)
        return None


class PlcServer:
    """The asyncua server and the nodes of every line; `publish` writes what the tracker decided."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.server = Server(
            user_manager=PasswordUsers(
                settings.opcua_user,
                settings.opcua_password.get_secret_value(),
                settings.opcua_allow_anonymous,
            )
        )
        self.namespace = 0
        self._lines: set[str] = set()
        self._recent: dict[str, deque[Outcome]] = {}  # per line, as published, oldest first
        self._root: Any = None
        self.heartbeat = 0

    async def start(self) -> None:
        s = self.settings
        await self.server.init()
        self.server.set_endpoint(s.opcua_endpoint)
        self.server.set_server_name("kenpin PLC bridge")
        await self.server.set_application_uri(s.opcua_application_uri)
        policies = []
        if s.opcua_certificate is not None and s.opcua_private_key is not None:
            await self.server.load_certificate(str(s.opcua_certificate))
            await self.server.load_private_key(str(s.opcua_private_key))
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
        if s.opcua_allow_unencrypted:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        self.server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if s.opcua_allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        self.server.set_identity_tokens(tokens)
        if s.opcua_trusted_clients is not None:
            store = TrustStore([s.opcua_trusted_clients], [])
            await store.load()
            validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
            self.server.set_certificate_validator(validator)
        self.namespace = await self.server.register_namespace(s.opcua_namespace_uri)
        ns = self.namespace
        self._root = await self.server.nodes.objects.add_folder(node_id(ns), f"{ns}:{OPCUA_ROOT}")
        bridge = await self._root.add_object(
            node_id(ns, OPCUA_BRIDGE_OBJECT), f"{ns}:{OPCUA_BRIDGE_OBJECT}"
        )
        await bridge.add_variable(
            node_id(ns, OPCUA_BRIDGE_OBJECT, "Heartbeat"), f"{ns}:Heartbeat", 0, V.UInt32
        )
        await bridge.add_variable(
            node_id(ns, OPCUA_BRIDGE_OBJECT, "Partitions"), f"{ns}:Partitions", 0, V.UInt32
        )
        for line in s.lines:
            await self.ensure_line(line)
        await self.server.start()
        log.info(
            "opc ua server listening",
            endpoint=s.opcua_endpoint,
            namespace=s.opcua_namespace_uri,
            namespace_index=ns,
            security=[p.name for p in policies],
            anonymous=s.opcua_allow_anonymous,
        )

    async def stop(self) -> None:
        await self.server.stop()

    async def ensure_line(self, line: str) -> None:
        """The line's object and variables, created the first time the line is heard of."""
        if line in self._lines:
            return
        ns = self.namespace
        obj = await self._root.add_object(node_id(ns, line), f"{ns}:{line}")
        for name, (vtype, initial) in LINE_VARIABLES.items():
            var = await obj.add_variable(node_id(ns, line, name), f"{ns}:{name}", initial, vtype)
            if isinstance(initial, list):  # a fixed-size one-dimensional array, as PLCs map it
                await var.write_value_rank(1)
                await var.write_array_dimensions([len(initial)])
        self._lines.add(line)
        log.info("line object created", line=line, node=f"ns={ns};s={opcua_node_name(line)}")

    async def publish(self, outcomes: Iterable[Outcome], states: Iterable[LineState]) -> None:
        """Each outcome in turn (a subscriber sees every one), then the counters of `states`.

        Per outcome: its values, the ring of recent outcomes, then `Sequence`, so a
        client that sees `Sequence` change finds the rest already written.
        """
        for outcome in outcomes:
            await self.ensure_line(outcome.line)
            await self._write(outcome.line, outcome_values(outcome))
            recent = self._recent.setdefault(outcome.line, deque(maxlen=RECENT))
            recent.append(outcome)
            await self._write(outcome.line, recent_values(recent))
            await self._write(outcome.line, {"Sequence": outcome.sequence})
        for state in states:
            await self.ensure_line(state.line)
            await self._write(state.line, counter_values(state))

    async def beat(self) -> None:
        self.heartbeat = (self.heartbeat + 1) % UINT32_WRAP
        await self._write_node(
            node_id(self.namespace, OPCUA_BRIDGE_OBJECT, "Heartbeat"), V.UInt32, self.heartbeat
        )

    async def partitions(self, count: int) -> None:
        await self._write_node(
            node_id(self.namespace, OPCUA_BRIDGE_OBJECT, "Partitions"), V.UInt32, count
        )

    async def _write(self, line: str, values: dict[str, Any]) -> None:
        for name, value in values.items():
            vtype, _ = LINE_VARIABLES[name]
            await self._write_node(node_id(self.namespace, line, name), vtype, value)

    async def _write_node(self, nid: ua.NodeId, vtype: ua.VariantType, value: Any) -> None:
        now = datetime.now(UTC)
        await self.server.write_attribute_value(
            nid, ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now)
        )
