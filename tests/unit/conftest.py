"""Unit tests talk to no server: a host name a profile gives does not resolve
here (at once), so the periodic probes answer "unreachable" without a lookup;
a test that wants an answer gives the probe a reader of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headroom.reconcile import resolver


@pytest.fixture(autouse=True)
def _no_name_resolves(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def lookup(host: str) -> list[str]:
        raise OSError(f"{host}: unit tests resolve no name")

    monkeypatch.setattr(resolver, "system_lookup", lookup)
    yield
