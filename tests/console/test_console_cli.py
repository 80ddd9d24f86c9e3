"""`kenpin-console` refuses to start without a password, and says which variable to set."""

from __future__ import annotations

from console.cli import main


def test_the_console_does_not_start_without_a_password(monkeypatch, capsys):
    monkeypatch.delenv("KENPIN_CONSOLE_PASSWORD", raising=False)
    assert main(["--port", "0"]) == 2
    assert "set KENPIN_CONSOLE_PASSWORD" in capsys.readouterr().err


def test_invalid_settings_are_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("KENPIN_CONSOLE_PASSWORD", "x")
    monkeypatch.setenv("KENPIN_CONSOLE_SESSION_MAX_AGE_S", "5")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: KENPIN_CONSOLE_SESSION_MAX_AGE_S" in err
    assert len(err.strip().splitlines()) == 1
