"""The operator's log format: text for people, or one JSON object per line for
log pipelines (``HEADROOM_LOG_FORMAT=json``, the chart's ``logFormat``).

The runtime calls :func:`configure` once at start-up; code that logs about a
profile passes :func:`fields` as ``extra=``. A JSON line always has ``time``,
``level``, ``logger`` and ``message``, and the stable keys of :data:`KEYS`
when the line is about them; nothing else a caller puts in ``extra`` is
written, so a key cannot appear by accident. Secret values are never logged:
messages name objects and fields, never their data.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The keys a JSON line may carry besides time/level/logger/message, in order.
# profile and namespace: the ScalingProfile a line is about; phase: what the
# operator was doing (a pass, one of its phases, a probe); duration: seconds it
# took; trigger: why a pass ran; result: how it ended (RESULTS); error: the
# exception's type.
KEYS = ("namespace", "profile", "phase", "trigger", "result", "duration", "error")
# How a pass ends: it wrote (applied) or had nothing to write (unchanged); it
# wrote what it could and waits for an answer it needs, a server's limits say
# (waiting); it was not needed (skipped) or a restarted operator found the
# profile as its status says (confirmed); the profile is gone; or it failed.
RESULTS = ("applied", "unchanged", "waiting", "skipped", "confirmed", "gone", "failed")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields(
    *,
    namespace: str | None = None,
    profile: str | None = None,
    phase: str | None = None,
    trigger: str | None = None,
    result: str | None = None,
    duration: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """``extra=`` for a log call: the stable keys that apply (None ones left out)."""
    given = {
        "namespace": namespace,
        "profile": profile,
        "phase": phase,
        "trigger": trigger,
        "result": result,
        "duration": None if duration is None else round(duration, 4),
        "error": error,
    }
    return {key: value for key, value in given.items() if value is not None}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, keys in a fixed order."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the stable keys that apply appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = [f"{k}={record.__dict__[k]}" for k in KEYS if record.__dict__.get(k) is not None]
        if not extra:
            return text
        head, sep, tail = text.partition("\n")  # a traceback stays below the line
        return f"{head} [{' '.join(extra)}]{sep}{tail}"


def configure(log_format: LogFormat, *, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _rfc3339(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
