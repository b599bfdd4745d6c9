"""Errors of the kube layer, mapped to kopf's retry semantics in one place
(:mod:`headroom.handlers.operator`)."""

from __future__ import annotations


class KubeError(Exception):
    """Base of everything this package raises."""


class NotServedError(KubeError):
    """The API server does not serve the kind (CRD not installed)."""


class ApiError(KubeError):
    def __init__(self, *, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retriable(self) -> bool:
        """Conflicts, throttling and server trouble pass; invalid objects do not."""
        return self.status in (409, 429) or self.status >= 500
