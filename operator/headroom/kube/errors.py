"""Errors of the kube layer. The work queue retries the retriable ones with
backoff; the reconcile pass turns the others into conditions naming the object."""

from __future__ import annotations


class KubeError(Exception):
    """Base of everything this package raises."""

    @property
    def retriable(self) -> bool:
        return True


class NotServedError(KubeError):
    """The API server does not serve the kind (CRD not installed, or removed)."""


class UnavailableError(KubeError):
    """The API server did not answer in time, or the connection failed."""


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

    @property
    def namespace_terminating(self) -> bool:
        """A create in a namespace being deleted: its profiles go with it."""
        return self.status == 403 and "because it is being terminated" in self.message

    @property
    def crd_terminating(self) -> bool:
        """A create of a custom resource whose CRD is being deleted."""
        return self.status in (403, 405) and (
            "while custom resource definition is terminating" in self.message
        )
