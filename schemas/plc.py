"""The OPC UA contract of the PLC bridge: the names a PLC program is written against.

A controls engineer configures these in the PLC's OPC UA client once; they must
not drift between versions. String node ids, in the namespace
`OPCUA_NAMESPACE_URI` (index 2 on the bridge's server):

- `kenpin.<line>.<variable>`: one object per production line
  (`ns=2;s=kenpin.l1.Sequence`, `ns=2;s=kenpin.l1.LastVerdict`, ...);
- `kenpin.Bridge.<variable>`: the bridge itself (`Heartbeat`, `Partitions`).

The variables and their types are listed in `bridge.opcua_server.LINE_VARIABLES`
and in docs/plc-integration.md.
"""

from __future__ import annotations

#: Namespace of every kenpin node.
OPCUA_NAMESPACE_URI = "urn:kenpin:plc"
#: The bridge's application URI: its certificate must name it (subjectAltName URI).
OPCUA_APPLICATION_URI = "urn:kenpin:bridge"
#: Root of the string node ids, and browse name of the folder under Objects.
OPCUA_ROOT = "kenpin"
#: The object of the bridge's own status, beside the lines.
OPCUA_BRIDGE_OBJECT = "Bridge"


def opcua_node_name(*path: str) -> str:
    """`("l1", "Sequence")` -> `kenpin.l1.Sequence` (the `s=` part of the node id)."""
    return ".".join((OPCUA_ROOT, *path))
