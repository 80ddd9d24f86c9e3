"""Log output: JSON lines off a terminal, readable text on one, stdlib logs in the same stream."""

import io
import json
import logging
import re

import pytest

from planes.logs import configure_logging, get_logger


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_auto_is_json_off_a_terminal():
    stream = io.StringIO()
    assert configure_logging("auto", stream=stream) == "json"
    get_logger("worker.test", line="l1").info("batch_judged", frames=16)
    event = json.loads(stream.getvalue().splitlines()[-1])
    assert event["event"] == "batch_judged"
    assert (event["line"], event["frames"], event["level"]) == ("l1", 16, "info")
    assert event["timestamp"].endswith("Z")


def test_auto_is_console_on_a_terminal():
    stream = FakeTty()
    assert configure_logging("auto", stream=stream) == "console"
    get_logger("worker.test").info("hello", frames=3)
    line = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())  # colours on a terminal
    assert "hello" in line and "frames=3" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_exceptions_are_in_the_json_event():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        get_logger().exception("frame_failed")
    event = json.loads(stream.getvalue().splitlines()[-1])
    assert "ZeroDivisionError" in event["exception"]


def test_stdlib_logs_share_the_format_and_chatty_libraries_are_quieted():
    stream = io.StringIO()
    configure_logging("json", level="DEBUG", stream=stream)
    logging.getLogger("kafka.conn").info("connecting")  # below WARNING: dropped
    logging.getLogger("kafka.conn").warning("broker %s down", "b1")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["broker b1 down"]
    assert lines[0]["logger"] == "kafka.conn"


def test_level_filters_debug():
    stream = io.StringIO()
    configure_logging("json", level="INFO", stream=stream)
    get_logger().debug("noise")
    assert stream.getvalue() == ""
