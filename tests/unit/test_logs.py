"""JSON log lines (HEADROOM_LOG_FORMAT=json): one object per line, stable
keys, nothing a caller did not mean to log."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from headroom import logs, settings


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "headroom.pass", logging.INFO, __file__, 1, "pass of %s", ("a/b",), None
    )
    record.__dict__.update(extra)
    return record


def test_json_line_has_the_stable_keys_in_order() -> None:
    extra = logs.fields(
        namespace="shop", profile="web", phase="pass", duration=0.123456, result="applied"
    )
    line = json.loads(logs.JSONFormatter().format(_record(**extra)))
    assert list(line) == [
        "time",
        "level",
        "logger",
        "message",
        "namespace",
        "profile",
        "phase",
        "result",
        "duration",
    ]
    assert line["message"] == "pass of a/b" and line["level"] == "info"
    assert line["duration"] == 0.1235
    assert line["time"].endswith("Z") and line["time"][10] == "T"


def test_keys_outside_the_stable_set_are_not_written() -> None:
    line = json.loads(logs.JSONFormatter().format(_record(password="hunter2", profile="web")))
    assert "password" not in line and "hunter2" not in json.dumps(line)


def test_an_exception_stays_inside_the_one_line() -> None:
    try:
        raise KeyError("spec")
    except KeyError:
        record = _record(**logs.fields(profile="web", error="KeyError"))
        record.exc_info = sys.exc_info()
    text = logs.JSONFormatter().format(record)
    assert "\n" not in text
    assert "KeyError" in json.loads(text)["exception"]


def test_text_lines_carry_the_keys_too() -> None:
    text = logs.TextFormatter().format(_record(**logs.fields(profile="web", phase="apply")))
    assert text.endswith("pass of a/b [profile=web phase=apply]")


def test_the_setting_accepts_text_and_json_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_LOG_FORMAT", "json")
    assert settings.Settings().log_format == "json"
    monkeypatch.setenv("HEADROOM_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        settings.Settings()
