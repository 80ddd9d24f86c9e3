"""`kenpin-bridge`: serve every line's verdicts to PLCs over OPC UA (and MQTT), with TIMEOUTs.

kenpin-bridge opcua                      # settings: KENPIN_BRIDGE_* variables
kenpin-bridge opcua --mqtt-url mqtt://broker:1883
kenpin-bridge mqtt --mqtt-url mqtt://broker:1883
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pydantic import ValidationError

from bridge.settings import BRIDGE_ENV_PREFIX, BridgeSettings
from planes.settings import settings_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kenpin-bridge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("opcua", "serve the OPC UA address space (and MQTT with --mqtt-url)"),
        ("mqtt", "publish to MQTT only, no OPC UA server"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--mqtt-url",
            help=f"mqtt://host:port or mqtts://host:port (else {BRIDGE_ENV_PREFIX}MQTT_URL)",
        )
    args = parser.parse_args(argv)

    from planes.logs import configure_logging, get_logger

    try:
        overrides = {"mqtt_url": args.mqtt_url} if args.mqtt_url else {}
        settings = BridgeSettings(**overrides)
        if args.command == "opcua":
            settings.check_opcua()
        elif settings.mqtt_url is None:
            raise ValueError(f"give --mqtt-url or {BRIDGE_ENV_PREFIX}MQTT_URL")
    except ValidationError as exc:  # one line an operator can act on, no traceback
        print(f"kenpin-bridge: {settings_problems(exc, BridgeSettings)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"kenpin-bridge: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)

    from bridge.relay import Relay

    async def serve() -> None:
        relay = Relay(settings, opcua=args.command == "opcua")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()

    try:
        asyncio.run(serve())
    except OSError as exc:  # the port is taken, a certificate file is missing, ...
        get_logger("bridge.cli").error("bridge cannot start", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
