"""kenpin's verdicts for PLCs: an OPC UA server (and MQTT) with one decision per part, in time.

`kenpin-bridge opcua` reads every line's frames (headers only matter), verdicts
and dead letters from Kafka and turns them into one outcome per part: OK, NG,
REJECTED_INPUT, or TIMEOUT when no verdict came within the line's deadline, so
a PLC always has something to act on. docs/plc-integration.md is for the
controls engineer who wires a line to it.
"""
